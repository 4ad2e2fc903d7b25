"""Run the PyTorch model and every exported backend on the same inputs and judge the backends by
what the task's users measure (vdeploy.runtime.tasks): COCO AP against PyTorch's detections,
label-map agreement, relative error of embeddings, top-1 agreement.

Inputs: the user's photos plus synthetic images at shapes other than the export example
(portrait and small), so that a dynamic export is checked away from the shape it was traced at; a
fixed-size (letterbox) bundle is fed at its own size. Element-wise statistics of the raw outputs
are kept as diagnostics: they say where two engines differ, not whether the model is right.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..bundle import Bundle, update_deploy_json
from ..errors import VerificationError
from ..runtime.backends import create_backend, runnable_backends, split_name
from ..runtime.compare import Tolerance, compare_outputs
from ..runtime.io import read_image
from ..runtime.postprocess import postprocess
from ..runtime.preprocess import preprocess
from ..runtime.tasks import get_task
from .spec import synthetic_image
from .torch_backend import TorchEagerBackend

VERIFY_SHAPES = ((640, 480), (360, 500))


def _inputs(bundle: Bundle, images: Sequence, own: Sequence = ()) -> list[tuple[str, np.ndarray, object]]:
    """(name, BGR image, preprocessed) of each verification input."""
    items = [(str(p), read_image(p)) for p in images] + list(own)
    items += [(f"random {h}x{w}", synthetic_image(h, w, seed=10 + i)) for i, (h, w) in enumerate(VERIFY_SHAPES)]
    return [(name, img, preprocess(img, bundle.meta, bundle.meta.get("input_size"))) for name, img in items]


def _nonfinite(ref: dict, got: dict) -> list[str]:
    """Outputs where the backend has NaN/Inf and PyTorch has none."""
    bad = []
    for name, v in got.items():
        v = np.asarray(v)
        if v.dtype.kind == "f" and not np.isfinite(v).all() and (name not in ref or np.isfinite(ref[name]).all()):
            bad.append(f"{name} ({int((~np.isfinite(v)).sum())} of {v.size} values)")
    return bad


def run_verification(bundle: Bundle, deployable=None, *, images: Sequence = (), backends: Optional[Sequence[str]] = None,
                     gates: Optional[dict[str, float]] = None, tolerances: Optional[dict[str, Tolerance]] = None,
                     weights: Optional[str] = None, held_out_images: Sequence = (), log=print) -> dict:
    """Compare every backend the bundle has with PyTorch; return the verification record (nothing is written).

    held_out_images: (name, BGR array) pairs of the user's data besides `images` (the share of a
    --calib folder neither calibration nor the float-layer search saw). A reduced-precision backend
    is judged on the user's images (`images` and these) when there are any: it was calibrated for
    their distribution, and its agreement on generated inputs unlike them is reported beside the
    verdict, not gated. Float32 backends are judged on every input."""
    task = get_task(bundle.task)
    task.resolve_gates(gates)  # an unknown gate is refused before any work
    ref_backend = TorchEagerBackend(bundle, deployable=deployable, weights=weights).load()
    names = list(backends or runnable_backends(bundle))
    cases = _inputs(bundle, images, held_out_images)
    user_cases = {name for name, _, _ in cases[:len(images) + len(held_out_images)]}
    runners = {b: create_backend(b, bundle).load() for b in names}
    refs, gots, refs_1t = [], {b: [] for b in names}, []
    nonfinite: dict[str, list[str]] = {b: [] for b in names}
    rows, judged_cases, skipped = [], [], []
    originals = {}
    for case, image, prep in cases:
        originals[case] = image
        raw_ref = ref_backend.infer(prep.inputs)
        if _nonfinite({}, raw_ref):
            # PyTorch itself overflows here (e.g. non-local blocks on an image unlike the training
            # data): there is no reference to judge a backend against on this input
            skipped.append(f"{case} ({', '.join(_nonfinite({}, raw_ref))})")
            continue
        judged_cases.append((case, prep))
        refs.append(postprocess(raw_ref, prep.meta, bundle.meta))
        with _one_thread():
            refs_1t.append(postprocess(ref_backend.infer(prep.inputs), prep.meta, bundle.meta))
        for b, runner in runners.items():
            raw = runner.infer(prep.inputs)
            bad = _nonfinite(raw_ref, raw)
            if bad:
                nonfinite[b].append(f"{case}: {', '.join(bad)}")
                raw = {k: np.nan_to_num(np.asarray(v)) for k, v in raw.items()}
            gots[b].append(postprocess(raw, prep.meta, bundle.meta))
            for r in compare_outputs(raw_ref, raw, bundle.task, tolerances):
                rows.append(dict(r.as_dict(), backend=b, input=case))
    if skipped:
        log("PyTorch itself gives non-finite outputs on " + "; ".join(skipped) + ": left out of the gates")
    if not judged_cases:
        raise VerificationError("PyTorch itself gives non-finite outputs on every verification input ("
                                + "; ".join(skipped) + "); give photos like the model's data with --images "
                                "(or export with --no-verify)")
    cases = judged_cases
    verdicts, first_failure = {}, None
    # PyTorch against itself on one thread: the float32 noise no export can be judged below. Where
    # PyTorch does not meet a gate against itself (a model whose outputs hang on its summation
    # order), the backend is held to PyTorch's own figure instead, and the note says so.
    noise = task.agreement(refs, refs_1t, bundle.meta).metrics
    # A gate the user set with --gate is theirs: it is enforced as given, never relaxed.
    chosen = set(gates or ())
    judged_by = {b: [g if g.metric in chosen else _at_noise_floor(g, noise.get(g.metric))
                     for g in task.resolve_gates(gates, split_name(b)[1])]
                 for b in names}
    own = [i for i, (c, _) in enumerate(cases) if c in user_cases]
    for b in names:
        judged = judged_by[b]
        agreement = task.agreement(refs, gots[b], bundle.meta)
        on_own = None
        if split_name(b)[1] != "fp32" and own and len(own) < len(cases):
            on_all = agreement
            agreement = task.agreement([refs[i] for i in own], [gots[b][i] for i in own], bundle.meta)
            agreement.per_input = on_all.per_input
            on_own = (f"judged on the user's {len(own)} image(s) (--images, held out of --calib); on all {len(cases)} inputs, "
                      f"generated ones included: " + ", ".join(f"{k} {v:.4g}" for k, v in on_all.metrics.items()))
        failed = [g.describe() + f" (got {agreement.metrics.get(g.metric, float('nan')):.6g})"
                  for g in judged if not g.passes(agreement.metrics.get(g.metric))]
        if nonfinite[b]:
            failed.insert(0, "non-finite outputs: " + "; ".join(nonfinite[b]))
        relaxed = [g.describe() for g in judged if g not in task.resolve_gates(gates, split_name(b)[1])]
        verdicts[b] = {"passed": not failed, "metrics": agreement.metrics, "failed": failed,
                       "gates": [g.describe() for g in judged],
                       "notes": agreement.notes + ([on_own] if on_own else []) + ([f"held to PyTorch's own agreement between 1 and "
                                                    f"{torch.get_num_threads()} threads: {', '.join(relaxed)}"]
                                                   if relaxed else []),
                       "per_input": [dict(r, input=c) for (c, _), r in zip(cases, agreement.per_input)]}
        if failed and first_failure is None:
            first_failure = f"{b} disagrees with PyTorch: {failed[0]}"
    failed_reduced = [b for b in names if not verdicts[b]["passed"] and split_name(b)[1] != "fp32"]
    if failed_reduced:
        from .input_stability import input_stability, stability_note

        idx = own if own and len(own) < len(cases) else list(range(len(cases)))
        stability = input_stability(ref_backend, task, bundle.meta, [originals[cases[i][0]] for i in idx],
                                    [refs[i] for i in idx])
        for b in failed_reduced:
            verdicts[b]["notes"].append(stability_note(stability, judged_by[b]))
    passed = first_failure is None and bool(names)
    _print_diagnostics(rows, log)
    log(f"PyTorch against itself (1 thread vs {torch.get_num_threads()}): "
        + ", ".join(f"{k} {v:.6g}" for k, v in noise.items()))
    for b, v in verdicts.items():
        figures = ", ".join(f"{k} {val:.6g}" for k, val in v["metrics"].items())
        log(f"{b}: {'PASS' if v['passed'] else 'FAIL'} ({figures})" + ("" if v["passed"] else f": {'; '.join(v['failed'])}")
            + "".join(f"\n  note: {n}" for n in v["notes"]))
    log("verification " + ("passed" if passed else f"FAILED: {first_failure or 'no backend to compare'}"))
    return {"passed": passed, "first_failure": first_failure or ("" if names else "no backend to compare"),
            "reference": "torch", "task": bundle.task, "gates": [g.describe() for g in task.resolve_gates(gates)],
            "inputs": [c for c, _ in cases], "inputs_without_reference": skipped, "backends": verdicts,
            "reference_noise": noise, "diagnostics": rows}


def _at_noise_floor(gate, own):
    """The gate, or PyTorch's own figure against itself where that falls short of it."""
    if own is None or gate.passes(own):
        return gate
    return gate.with_threshold(own)


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def verify_bundle(bundle: Bundle, deployable=None, *, raise_on_failure: bool = True, **kwargs) -> Bundle:
    """run_verification, then store the record in the bundle's deploy.json."""
    record = run_verification(bundle, deployable, **kwargs)
    bundle = update_deploy_json(bundle, verification=record)
    if not record["passed"] and raise_on_failure:
        raise VerificationError(record["first_failure"])
    return bundle


def _print_diagnostics(rows: list[dict], log) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is a core dependency, but keep verify usable without it
        for r in rows:
            log(r)
        return
    t = Table(title="raw outputs against PyTorch (diagnostics; the verdict is by the task's gates below)")
    for c in ("backend", "input", "output", "max abs", "max rel", "needed atol", "within tol"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["backend"], Path(r["input"]).name, r["output"], f"{r['max_abs']:.2e}", f"{r['max_rel']:.2e}",
                  f"{r['needed_atol']:.2e}", ("yes" if r["passed"] else "no") + (f" ({r['note']})" if r["note"] else ""))
    Console(width=150).print(t)
