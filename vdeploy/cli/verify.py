from __future__ import annotations

NAME = "verify"
HELP = "Compare every backend of a bundle with the PyTorch model; store the results in the bundle."


def add_arguments(p):
    p.add_argument("bundle")
    p.add_argument("--images", nargs="*", default=[], help="photos to verify on (besides synthetic ones)")
    p.add_argument("--backends", help="comma-separated (default: every format in the bundle)")
    p.add_argument("--tol", action="append", default=[], metavar="OUTPUT=RTOL,ATOL",
                   help="per-output tolerance, e.g. --tol boxes=1e-3,1e-2 (default rtol 1e-3, atol 1e-4)")


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
    from ..runtime.bundle import load_bundle
    from .common import expand_images, parse_list

    bundle = load_bundle(args.bundle)
    images = expand_images(args.images) if args.images else []
    verify_bundle(bundle, images=images, backends=parse_list(args.backends) or None, tolerances=_tolerances(args.tol))
    return 0
