from __future__ import annotations

NAME = "info"
HELP = "What a bundle is and how to feed it by hand: task, inputs, preprocessing numbers, outputs, verification."


def add_arguments(p):
    p.add_argument("bundle")
    p.add_argument("--snippet", choices=("onnxruntime", "torchscript", "none"), default="onnxruntime",
                   help="print a minimal script that feeds one photo to the model (default onnxruntime)")


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..bundle import load_bundle
    from ..runtime.feeding import feeding_facts, snippet

    bundle = load_bundle(args.bundle)
    table = Table(title=f"{bundle.path} ({', '.join(bundle.formats)})", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for what, value in feeding_facts(bundle):
        table.add_row(what, value)
    v = bundle.meta.get("verification") or {}
    if v:
        verdicts = "; ".join(f"{b} {'PASS' if r.get('passed') else 'FAIL'}" for b, r in (v.get("backends") or {}).items()
                             if isinstance(r, dict))
        table.add_row("verification", ("passed" if v.get("passed") else f"FAILED: {v.get('first_failure', '')}")
                      + (f" ({verdicts})" if verdicts else ""))
    prov = bundle.meta.get("provenance", {})
    table.add_row("made from", f"{prov.get('source', '?')} with {prov.get('weights') or 'no weights'}")
    Console(width=140).print(table)
    if args.snippet != "none":
        fmt = "onnx" if args.snippet == "onnxruntime" else "torchscript"
        if fmt in bundle.formats:
            print(f"\n# feeding {bundle.path} by hand with {args.snippet} (numpy + OpenCV; what vdeploy does):")
            print(snippet(bundle, args.snippet))
        else:
            print(f"\n(no {fmt} file in this bundle for a {args.snippet} snippet)")
    return 0
