"""The `vdeploy` command: a thin shell over the Python API.

Each sub-command is one module in this package exposing `NAME`, `HELP`, `add_arguments(parser)`
and `run(args) -> int`. Register a new command by adding its module to `COMMANDS`, nowhere else.
Commands import heavy dependencies (torch, onnxruntime) inside `run`, so `vdeploy --help` and
torch-free commands stay fast and work without torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import UserError

COMMANDS = (
    "export", "verify", "predict", "bench", "flops", "publish", "config", "plot_logs",
    "convert_weights", "eval", "make_dataset", "to_bin", "from_bin", "serve", "export_triton", "triton_serve", "info", "sign",
)


def _command_modules():
    # every listed command must import: a misspelt or broken one is a bug, never a missing command
    for name in COMMANDS:
        yield importlib.import_module(f"{__name__}.{name}")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="vdeploy", description="Export, verify, run, evaluate, benchmark and serve vision models.")
    parser.add_argument("--version", action="version", version=f"vdeploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser




def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"vdeploy {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vdeploy {args.command}: interrupted", file=sys.stderr)
        return 130
