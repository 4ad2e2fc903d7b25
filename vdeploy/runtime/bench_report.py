"""Bench rows -> a rich table on screen and a bar chart PNG."""
from __future__ import annotations

import io


def print_rows(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="vdeploy bench")
    for c in ("backend", "batch", "mode", "mean ms", "p50 ms", "p90 ms", "p99 ms", "samples/s", "peak RSS MB", "pre / infer / post ms", "vs first"):
        t.add_column(c, justify="right" if c not in ("backend", "mode") else "left")
    base = next((r["latency_ms"]["p50"] for r in rows if "latency_ms" in r), None)
    for r in rows:
        if "skipped" in r:
            t.add_row(r["backend"], str(r["batch"]), r["mode"], *["-"] * 7, f"skipped: {r['skipped']}")
            continue
        lat, st = r["latency_ms"], r.get("stages_ms")
        stages = f"{st['preprocess']:.1f} / {st['infer']:.1f} / {st['postprocess']:.1f}" if st else "-"
        t.add_row(r["backend"], str(r["batch"]), r["mode"], f"{lat['mean']:.2f}", f"{lat['p50']:.2f}", f"{lat['p90']:.2f}",
                  f"{lat['p99']:.2f}", f"{r['throughput']:.1f}", f"{r['peak_rss_mb']:.0f}", stages,
                  f"{base / lat['p50']:.2f}x" if base else "-")
    Console(width=160).print(t)


def plot_rows(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_write

    done = [r for r in rows if "latency_ms" in r]
    labels = [f"{r['backend']}\nbatch {r['batch']}" for r in done]
    fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(done)), 3.5))
    ax.bar(labels, [r["latency_ms"]["p50"] for r in done], color="#4c72b0")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title(f"vdeploy bench ({done[0]['mode'] if done else ''})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
