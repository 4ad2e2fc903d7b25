"""`vdeploy plot-logs LOG... --keys loss,mIoU`: training curves from JSON-lines logs."""
from __future__ import annotations

NAME = "plot-logs"
HELP = "Plot training curves from detectron2 / fast-reid metrics.json and MMSegmentation JSON logs."


def add_arguments(parser) -> None:
    parser.add_argument("logs", nargs="+", metavar="LOG",
                        help="metrics.json (detectron2, centermask2, fast-reid), *.log.json or scalars.json (MMSegmentation)")
    parser.add_argument("--keys", required=True,
                        help="comma-separated scalars to plot, e.g. total_loss,mIoU (a key also matches "
                             "the last part of a/b or a.b names: mIoU finds sem_seg/mIoU)")
    parser.add_argument("--out", default="curves.png", help="PNG to write (default curves.png)")
    parser.add_argument("--legend", nargs="+", metavar="NAME",
                        help="curve names: one per log, or one per log and key (log-major, as MMSegmentation's "
                             "analyze_logs takes them); default: the file names")


def run(args) -> int:
    import sys

    from rich.console import Console
    from rich.table import Table

    from ..errors import UserError
    from ..tools.plot_logs import collect, render_png

    keys = [k.strip() for k in args.keys.split(",") if k.strip()]
    if not keys:
        raise UserError("--keys: give at least one key, e.g. --keys total_loss")
    data = collect(args.logs, keys)
    for line in data.problems + data.missing:
        print(f"warning: {line}", file=sys.stderr)
    for line in data.notes:
        print(f"note: {line}", file=sys.stderr)
    if not data.series:
        raise UserError("nothing to plot: none of the keys was found in any log")

    render_png(data.series, keys, args.out, legend=args.legend, paths=[log.path for log in data.logs])
    table = Table("key", "points", "steps", "last", "min", "max")
    table.add_column("log", overflow="fold")
    for s in data.series:
        table.add_row(s.log_key, str(len(s.values)), f"{s.steps[0]:g}..{s.steps[-1]:g}",
                      f"{s.values[-1]:.4g}", f"{min(s.values):.4g}", f"{max(s.values):.4g}", str(s.path))
    Console().print(table)
    print(f"wrote {args.out}")
    return 0
