"""Bench rows -> a rich table on screen and a bar chart PNG."""
from __future__ import annotations

import io


STAGES = ("decode", "preprocess", "infer", "postprocess")
STAGE_COLOURS = {"decode": "#8c8c8c", "preprocess": "#dd8452", "infer": "#4c72b0", "postprocess": "#55a868"}


def print_rows(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="vdeploy bench")
    for c in ("backend", "batch", "streams", "mode", "mean ms", "p50 ms", "p90 ms", "p99 ms", "samples/s", "peak RSS MB",
              "decode / pre / infer / post ms (means)", "vs first"):
        t.add_column(c, justify="right" if c not in ("backend", "mode") else "left")
    base = next((r["latency_ms"]["p50"] for r in rows if "latency_ms" in r), None)
    # throughput mode (--streams): compare samples/s, which is what more streams buy
    by_throughput = any(r.get("streams") for r in rows)
    base_tp = next((r["throughput"] for r in rows if "latency_ms" in r), None)
    for r in rows:
        if "skipped" in r:
            t.add_row(r["backend"], str(r["batch"]), str(r.get("streams") or "-"), r["mode"], *["-"] * 7,
                      f"skipped: {r['skipped']}")
            continue
        lat, st = r["latency_ms"], r.get("stages_ms")
        stages = " / ".join(f"{st[k]:.1f}" for k in STAGES) if st else "-"
        vs = (f"{r['throughput'] / base_tp:.2f}x" if by_throughput and base_tp else
              f"{base / lat['p50']:.2f}x" if base else "-")
        t.add_row(r["backend"], str(r["batch"]), str(r.get("streams") or "-"), r["mode"], f"{lat['mean']:.2f}", f"{lat['p50']:.2f}", f"{lat['p90']:.2f}",
                  f"{lat['p99']:.2f}", f"{r['throughput']:.1f}", f"{r['peak_rss_mb']:.0f}", stages, vs)
    Console(width=160).print(t)


def plot_rows(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..runtime.io import atomic_write

    done = [r for r in rows if "latency_ms" in r]
    labels = [f"{r['backend']}\nbatch {r['batch']}" + (f", {r['streams']} streams" if r.get("streams") else "") for r in done]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(done)), 4))
    x = range(len(done))
    if done and all("stages_ms" in r for r in done):  # e2e: where the time goes, stage by stage
        bottom = [0.0] * len(done)
        for stage in STAGES:
            vals = [r["stages_ms"][stage] for r in done]
            ax.bar(x, vals, bottom=bottom, color=STAGE_COLOURS[stage], label=stage)
            bottom = [b + v for b, v in zip(bottom, vals)]
        heights, what = bottom, "mean latency (ms), by stage"
        ax.legend(fontsize=8)
    else:
        heights, what = [r["latency_ms"]["p50"] for r in done], "p50 latency (ms)"
        ax.bar(x, heights, color="#4c72b0")
    for i, (h, r) in enumerate(zip(heights, done)):
        ax.annotate(f"{h:.1f} ms\n{r['throughput']:.1f}/s", (i, h), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), labels)
    ax.set_ylabel(what)
    ax.set_ylim(0, max(heights, default=1) * 1.25)
    ax.set_title(f"vdeploy bench ({done[0]['mode'] if done else ''}), lower is better")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
