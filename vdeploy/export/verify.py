"""Run the PyTorch model and every exported backend on the same inputs and compare them.

Inputs: the user's photos plus synthetic images at shapes other than the export example
(portrait and small), so that a dynamic export is checked away from the shape it was traced at.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..errors import VerificationError
from ..runtime.backends import BACKEND_FORMAT, create_backend
from ..runtime.bundle import Bundle, update_deploy_json
from ..runtime.compare import Tolerance, compare_outputs
from ..runtime.io import read_image
from ..runtime.preprocess import preprocess
from .spec import synthetic_image
from .torch_backend import TorchEagerBackend

VERIFY_SHAPES = ((640, 480), (360, 500))


def _inputs(bundle: Bundle, images: Sequence) -> list[tuple[str, dict]]:
    items = [(str(p), read_image(p)) for p in images]
    items += [(f"random {h}x{w}", synthetic_image(h, w, seed=10 + i)) for i, (h, w) in enumerate(VERIFY_SHAPES)]
    return [(name, preprocess(img, bundle.meta, bundle.meta.get("input_size")).inputs) for name, img in items]


def verify_bundle(bundle: Bundle, deployable=None, *, images: Sequence = (), backends: Optional[Sequence[str]] = None,
                  tolerances: Optional[dict[str, Tolerance]] = None, log=print, raise_on_failure: bool = True) -> Bundle:
    """Compare every backend the bundle has with PyTorch; store the results in deploy.json."""
    ref_backend = TorchEagerBackend(bundle, deployable=deployable).load()
    names = list(backends or [b for b, f in BACKEND_FORMAT.items() if f and f in bundle.formats])
    cases = _inputs(bundle, images)
    rows, first_failure = [], None
    runners = {b: create_backend(b, bundle).load() for b in names}
    for case, inputs in cases:
        ref = ref_backend.infer(inputs)
        for b, runner in runners.items():
            for r in compare_outputs(ref, runner.infer(inputs), bundle.task, tolerances):
                rows.append(dict(r.as_dict(), backend=b, input=case))
                if not r.passed and first_failure is None:
                    first_failure = f"{b} diverged from PyTorch on {case}: output {r.name!r} " + (
                        f"max abs error {r.max_abs:.3g} needs atol {r.needed_atol:.3g} (have rtol {r.tol.rtol:g}, atol {r.tol.atol:g})"
                        if r.name != "detections" else r.note)
    passed = first_failure is None and bool(rows)
    _print_table(rows, log)
    result = {"passed": passed, "first_failure": first_failure or "", "backends": names, "reference": "torch",
              "inputs": [c for c, _ in cases], "rows": rows}
    log("verification " + ("passed" if passed else f"FAILED: {first_failure}"))
    bundle = update_deploy_json(bundle, verification=result)
    if not passed and raise_on_failure:
        raise VerificationError(first_failure or "nothing was compared")
    return bundle


def _print_table(rows: list[dict], log) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is a core dependency, but keep verify usable without it
        for r in rows:
            log(r)
        return
    t = Table(title="verification against PyTorch")
    for c in ("backend", "input", "output", "max abs", "max rel", "needed atol", "status"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["backend"], Path(r["input"]).name, r["output"], f"{r['max_abs']:.2e}", f"{r['max_rel']:.2e}",
                  f"{r['needed_atol']:.2e}", ("ok" if r["passed"] else "FAIL") + (f" ({r['note']})" if r["note"] else ""))
    Console(width=150).print(t)
