from __future__ import annotations

NAME = "verify"
HELP = "Compare every backend of a bundle with the PyTorch model; store the results in the bundle."


def add_gate_argument(p):
    p.add_argument("--gate", action="append", default=[], metavar="METRIC=VALUE",
                   help="tighten or loosen one of the task's gates, e.g. --gate bbox_ap=0.995, --gate rel_l2=1e-4 "
                        "(detection: bbox_ap, segm_ap; semantic: pixel_agreement, miou; embedding: rel_l2, cosine; "
                        "classification: top1_agreement, prob_abs)")


def add_arguments(p):
    p.add_argument("bundle")
    p.add_argument("--images", nargs="*", default=[], help="photos to verify on (besides synthetic ones)")
    p.add_argument("--backends", help="comma-separated (default: every format in the bundle)")
    p.add_argument("--weights", help="the checkpoint the bundle was exported from, when it is no longer where "
                                     "the bundle's provenance says (the PyTorch reference is rebuilt from it)")
    add_gate_argument(p)
    p.add_argument("--explain", action="store_true",
                   help="first compare PyTorch and each onnxruntime/openvino backend stage by stage (backbone levels, "
                        "neck, heads) and name the first stage that diverges (see docs/verification.md)")
    p.add_argument("--tol", action="append", default=[], metavar="OUTPUT=RTOL,ATOL",
                   help="element-wise tolerance of the diagnostics table, e.g. --tol boxes=1e-3,1e-2 (not a gate)")


def _tolerances(items):
    from ..errors import UserError
    from ..runtime.compare import Tolerance

    tols = {}
    for it in items:
        try:
            name, vals = it.split("=")
            rtol, atol = (float(v) for v in vals.split(","))
        except ValueError:
            raise UserError(f"--tol must look like OUTPUT=RTOL,ATOL, got {it!r}") from None
        tols[name] = Tolerance(rtol, atol)
    return tols


def run(args) -> int:
    from ..export.verify import verify_bundle
    from ..bundle import load_bundle
    from ..runtime.tasks import parse_gate_options
    from .common import expand_images, parse_list

    bundle = load_bundle(args.bundle)
    images = expand_images(args.images) if args.images else []
    if args.explain:
        from ..export.explain import explain_bundle

        explain_bundle(bundle, images=images, backends=parse_list(args.backends) or None, weights=args.weights)
    verify_bundle(bundle, images=images, backends=parse_list(args.backends) or None, tolerances=_tolerances(args.tol),
                  gates=parse_gate_options(args.gate), weights=args.weights)
    return 0
