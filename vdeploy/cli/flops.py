"""`vdeploy flops MODEL`: parameters and FLOPs per module (a tree) and in total."""
from __future__ import annotations

from .common import add_config_override_arguments

NAME = "flops"
HELP = "Count parameters and FLOPs/MACs of a model, per module and in total."


def add_arguments(parser) -> None:
    parser.add_argument("model", help="model spec: torchvision:NAME, a detectron2/fast-reid YAML, an MMSegmentation .py config")
    parser.add_argument("--weights", help="checkpoint to load (FLOPs do not depend on it; default: none)")
    parser.add_argument("--input-size", metavar="HxW",
                        help="size of dynamic image inputs (default from the model's preprocessing: "
                             "224x224 classification, 800x1333 detection)")
    parser.add_argument("--depth", type=int, default=3, help="deepest module level shown in the tree (default 3)")
    parser.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    add_config_override_arguments(parser)


def run(args) -> int:
    from ..errors import UserError
    from ..frameworks import build_model
    from ..runtime.io import atomic_write_json
    from ..tools.flops import count_flops, example_inputs
    from .common import parse_config_overrides, parse_size

    if args.depth < 0:
        raise UserError("--depth must be 0 or more")
    size = parse_size(args.input_size)
    deployable = build_model(args.model, args.weights, config_overrides=parse_config_overrides(args))
    inputs, shapes = example_inputs(deployable.spec, size)
    report = count_flops(deployable.module, inputs)
    report.input_shapes = shapes
    print_report(report, args.depth, title=args.model)
    if args.json:
        atomic_write_json(args.json, {"model": args.model, **report.to_json()})
    return 0


def print_report(report, depth: int, title: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.tree import Tree

    from ..tools.flops import human

    total = max(report.flops, 1)

    def label(m):
        name = escape(m.name.rsplit(".", 1)[-1] if m.name else title)
        share = f" ({100 * m.flops / total:.1f}%)" if m.flops else ""
        return (f"[bold]{name}[/bold] [dim]{m.type}[/dim]  params {human(m.params)}  "
                f"MACs {human(m.macs)}{share}")

    root = report.modules[0]
    tree = Tree(label(root))
    nodes = {"": tree}
    for m in report.modules[1:]:
        if m.depth > depth:
            continue
        parent = m.name.rsplit(".", 1)[0] if "." in m.name else ""
        if parent in nodes:
            nodes[m.name] = nodes[parent].add(label(m))

    console = Console()
    console.print(tree)
    shapes = ", ".join(f"{k} {list(v)}" for k, v in report.input_shapes.items())
    console.print(f"inputs: {shapes}")
    console.print(f"[bold]params {report.params:,} ({human(report.params)})  "
                  f"MACs {report.macs:,} ({human(report.macs)})  FLOPs {human(report.flops)}[/bold]")
    console.print("counted: " + ", ".join(f"{op} {human(n)}" for op, n in sorted(report.counted_ops.items())))
    if report.uncounted:
        console.print("[yellow]not counted (no FLOP formula; calls):[/yellow] "
                      + ", ".join(f"{op} x{n}" for op, n in sorted(report.uncounted.items())))
