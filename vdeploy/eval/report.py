"""The side-by-side report: a console table, report.md and report.json.

report.json: {"model", "dataset", "backends": {name: {metric: value}}, "difference_to_first":
{name: {metric: delta}}, "tables": {name: {table: {row: {col: value}}}}, "speed": {name:
images/s}, "notes": {name: [...]}}. Values are fractions in [0, 1] (AP, mIoU, top-1, ...)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..runtime.io import atomic_write, atomic_write_json
from .runner import BackendResult


def metric_names(results: Sequence[BackendResult]) -> list[str]:
    names: list[str] = []
    for r in results:
        names += [k for k in r.scores.metrics if k not in names]
    return names


def build_report(results: Sequence[BackendResult], model: str, dataset: dict, limit: Optional[int]) -> dict:
    first = results[0].scores.metrics if results else {}
    diff = {}
    for r in results[1:]:
        diff[r.name] = {k: (v - first[k] if v is not None and first.get(k) is not None else None)
                        for k, v in r.scores.metrics.items()}
    return {
        "model": model,
        "dataset": dataset,
        "limit": limit,
        "images": {r.name: r.images for r in results},
        "backends": {r.name: dict(r.scores.metrics) for r in results},
        "difference_to_first": diff,
        "tables": {r.name: r.scores.tables for r in results if r.scores.tables},
        "speed": {r.name: r.images_per_second for r in results if r.images_per_second},
        "notes": {r.name: r.scores.notes for r in results if r.scores.notes},
    }


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _delta(v) -> str:
    return "-" if v is None else f"{v:+.4f}"


def rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per metric, a column per backend and per difference."""
    names = list(report["backends"])
    header = ["metric"] + [names[0]] + [c for n in names[1:] for c in (n, f"Δ {n}")]
    metrics: list[str] = []
    for m in report["backends"].values():
        metrics += [k for k in m if k not in metrics]
    out = []
    for k in metrics:
        row = [k, _fmt(report["backends"][names[0]].get(k))]
        for n in names[1:]:
            row += [_fmt(report["backends"][n].get(k)), _delta(report["difference_to_first"][n].get(k))]
        out.append(row)
    return header, out


def to_markdown(report: dict) -> str:
    header, body = rows(report)
    lines = [f"# Evaluation of {report['model']}", "",
             "Dataset: " + ", ".join(f"{k}={v}" for k, v in report["dataset"].items()), ""]
    if report.get("limit"):
        lines += [f"Limited to the first {report['limit']} images.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    if report["speed"]:
        lines += ["", "Throughput (this run): " + ", ".join(f"{n} {v:.1f} images/s" for n, v in report["speed"].items())]
    for name, tables in report["tables"].items():
        for tname, table in tables.items():
            if tname.startswith("per-category"):
                lines += ["", f"## {name}: {tname}", ""] + _category_grid(table)
                continue
            cols = sorted({c for row in table.values() for c in row})
            lines += ["", f"## {name}: {tname}", "", "| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
            lines += [f"| {r} | " + " | ".join(_fmt(v.get(c)) for c in cols) + " |" for r, v in table.items()]
    for name, notes in report["notes"].items():
        lines += [""] + [f"- {name}: {n}" for n in notes]
    return "\n".join(lines) + "\n"


CATEGORY_COLUMNS = 3  # category/AP pairs per row, detectron2's layout


def _category_rows(table: dict) -> tuple[int, list[list[str]]]:
    """A per-category table as detectron2 prints it: (pairs per row, rows of category, AP, ...)."""
    cells = [(name, "nan" if row.get("AP") is None else f"{row['AP']:.3f}") for name, row in table.items()]
    n = min(CATEGORY_COLUMNS, max(len(cells), 1))
    rows = []
    for i in range(0, len(cells), n):
        chunk = cells[i:i + n] + [("", "")] * (n - len(cells[i:i + n]))
        rows.append([v for pair in chunk for v in pair])
    return n, rows


def _category_grid(table: dict) -> list[str]:
    n, body = _category_rows(table)
    return ["| " + " | ".join(["category", "AP"] * n) + " |", "|" + "---|" * (2 * n)] + ["| " + " | ".join(r) + " |" for r in body]


def print_table(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    header, body = rows(report)
    table = Table(title=f"{report['dataset'].get('format', '')} evaluation of {report['model']}")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in body:
        table.add_row(*r)
    console.print(table)
    for name, tables in report["tables"].items():
        for tname, grid in tables.items():
            if tname.startswith("per-category"):
                t = Table(title=f"{name}: {tname}")
                n, body = _category_rows(grid)
                for _ in range(n):
                    t.add_column("category")
                    t.add_column("AP", justify="right")
                for r in body:
                    t.add_row(*r)
                console.print(t)
    for name, notes in report["notes"].items():
        for n in notes:
            console.print(f"[yellow]{name}[/]: {n}")


def write_report(report: dict, out: Path) -> None:
    atomic_write_json(out / "report.json", report)
    atomic_write(out / "report.md", to_markdown(report))
