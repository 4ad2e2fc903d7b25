"""Training curves from JSON-lines logs.

Formats read (one JSON object per line):
- detectron2 / centermask2 `metrics.json`: `iteration` plus scalars (`total_loss`, `lr`,
  `bbox/AP`, `sem_seg/mIoU`, ...). fast-reid writes the same format through its copy of
  detectron2's `JSONWriter` (`Market1501/Rank-1`, `Market1501/mAP`, ...).
- MMSegmentation 0.x `*.log.json`: `mode` (train/val), `iter`, scalars (`loss`, `mIoU`, ...); the
  first line (environment info, no `iter`) is skipped.
- MMSegmentation 1.x (MMEngine) `vis_data/scalars.json`: `step` (plus `iter` on train lines).

The x axis is the first of `iteration`, `step`, `iter` present in a line. A requested key matches
a log key exactly, or, when no key matches exactly, as the last `/`- or `.`-separated part
(`mIoU` finds `sem_seg/mIoU`, `AP` finds `bbox/AP` and `segm/AP`). When a resumed run logs a step
again, the later value wins.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import UserError
from ..runtime.io import atomic_write

STEP_KEYS = ("iteration", "step", "iter")


@dataclass
class Series:
    path: Path
    key: str                 # the requested key
    log_key: str             # the key in the log it matched
    steps: list[float]
    values: list[float]


@dataclass
class ParsedLog:
    path: Path
    records: list[tuple[float, dict]] = field(default_factory=list)   # (step, line), file order
    problems: list[str] = field(default_factory=list)                 # "file:line: why"
    lines_without_step: int = 0

    def keys(self) -> set[str]:
        return {k for _, rec in self.records for k in rec if k not in STEP_KEYS}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_log(path: str | Path) -> ParsedLog:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise UserError(f"{path}: no such log file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None
    log = ParsedLog(path)
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            log.problems.append(f"{path}:{lineno}: not JSON ({e})")
            continue
        if not isinstance(rec, dict):
            log.problems.append(f"{path}:{lineno}: a JSON {type(rec).__name__}, not an object")
            continue
        step_key = next((k for k in STEP_KEYS if k in rec), None)
        if step_key is None:
            log.lines_without_step += 1
            continue
        if not _is_number(rec[step_key]):
            log.problems.append(f"{path}:{lineno}: {step_key} {rec[step_key]!r} is not a number")
            continue
        log.records.append((float(rec[step_key]), rec))
    return log


def match_keys(available: set[str], wanted: str) -> list[str]:
    if wanted in available:
        return [wanted]
    return sorted(k for k in available if k.rsplit("/", 1)[-1] == wanted or k.rsplit(".", 1)[-1] == wanted)


def extract_series(log: ParsedLog, wanted: str) -> list[Series]:
    out = []
    for log_key in match_keys(log.keys(), wanted):
        by_step: dict[float, float] = {}
        for step, rec in log.records:
            if log_key not in rec:
                continue
            value = rec[log_key]
            if value is None or not _is_number(value):
                log.problems.append(f"{log.path}: {log_key} at step {step:g} is {value!r}, not a number")
                continue
            by_step[step] = float(value)
        if by_step:
            steps = sorted(by_step)
            out.append(Series(log.path, wanted, log_key, steps, [by_step[s] for s in steps]))
    return out


@dataclass
class PlotData:
    series: list[Series]
    missing: list[str]       # "file: no key 'x'" lines
    problems: list[str]
    notes: list[str]
    logs: list[ParsedLog] = field(default_factory=list)  # every log read, in the order given


def collect(paths: Sequence[str | Path], keys: Sequence[str]) -> PlotData:
    data = PlotData([], [], [], [])
    for p in paths:
        log = read_log(p)
        data.logs.append(log)
        if log.lines_without_step:
            data.notes.append(f"{log.path}: {log.lines_without_step} line(s) without "
                              f"{'/'.join(STEP_KEYS)} skipped")
        available = log.keys()
        for key in keys:
            found = extract_series(log, key)
            if found:
                data.series.extend(found)
            else:
                hint = ", ".join(sorted(available)[:12]) or "none"
                data.missing.append(f"{log.path}: no key {key!r} (keys there: {hint})")
        data.problems.extend(log.problems)
    return data


def _labels(paths: Sequence[Path]) -> dict[Path, str]:
    """File names, with their folder when two logs share a name (every run writes metrics.json)."""
    names = [p.name for p in paths]
    return {p: (f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name) for p in paths}


def legend_labels(paths: Sequence[Path], keys: Sequence[str], legend: Sequence[str] | None) -> dict[tuple[Path, str], str]:
    """(file, key) -> curve label. `legend` names one curve per file (the same in every panel) or,
    as MMSegmentation's analyze_logs takes it, one per file and key (file-major); by default the
    file name."""
    paths = list(dict.fromkeys(paths))
    if legend is None:
        names = _labels(paths)
        return {(p, k): names[p] for p in paths for k in keys}
    legend = list(legend)
    if len(legend) == len(paths):
        return {(p, k): legend[i] for i, p in enumerate(paths) for k in keys}
    if len(legend) == len(paths) * len(keys):
        return {(p, k): legend[i * len(keys) + j] for i, p in enumerate(paths) for j, k in enumerate(keys)}
    raise UserError(f"--legend: give {len(paths)} names (one per log) or {len(paths) * len(keys)} "
                    f"(one per log and key), got {len(legend)}")


def render_png(series: Sequence[Series], keys: Sequence[str], out: str | Path,
               legend: Sequence[str] | None = None, paths: Sequence[Path] | None = None) -> None:
    """One panel per key, one curve per file (and matched log key); written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [k for k in keys if any(s.key == k for s in series)]
    if not keys:
        raise UserError("nothing to plot: none of the keys is in any log")
    fig = Figure(figsize=(8, 3.2 * len(keys)), constrained_layout=True)
    FigureCanvasAgg(fig)
    labels = legend_labels(list(paths) if paths is not None else [s.path for s in series], keys, legend)
    axes = fig.subplots(len(keys), 1, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys):
        for s in (s for s in series if s.key == key):
            label = labels[(s.path, key)] + ("" if s.log_key == key or legend else f" [{s.log_key}]")
            finite = [(x, y) for x, y in zip(s.steps, s.values) if math.isfinite(y)]
            xs, ys = zip(*finite) if finite else ((), ())
            ax.plot(xs, ys, label=label, marker="o" if len(xs) <= 30 else None, markersize=3, linewidth=1.2)
        ax.set_title(key)
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write(out, buf.getvalue())
