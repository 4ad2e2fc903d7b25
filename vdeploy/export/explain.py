"""`vdeploy verify BUNDLE --explain`: where, stage by stage, a backend parts from PyTorch.

The gates of verify.py say *whether* a backend agrees with PyTorch; this says *where* it stops
agreeing. The PyTorch model is rebuilt as verify does (from the bundle's provenance), forward
hooks are put on its stages, and a wrapper that returns the model's outputs plus every hooked
intermediate tensor is exported to a temporary ONNX file with the bundle's exporter settings
(formats.export_onnx, the bundle's opset; OpenVINO converts that file as the bundle's IR was
converted). Each backend runs that graph on the same preprocessed inputs as verify, and every
stage is compared with PyTorch's: max abs, relative L2, cosine, NaN/Inf counts. The first stage
(in the order stages finish, so a block before the stage holding it) that is non-finite where
PyTorch is finite, or whose relative L2 exceeds the threshold, is named.

Stages: a model's module may list them (`explain_stages`, dotted submodule names); otherwise the
modules at most `depth` levels below the root, where a container that is never called itself
(nn.ModuleList, a Sequential iterated block by block) is not counted as a level. A stage called
several times is reported once per call (`name#2`, ...).

The graph explained is a fresh export, not the bundle's file: its final outputs are compared with
the bundle's own model on the same input, so that a bundle whose file was changed after export
(or an exporter whose fusions depend on which tensors are outputs) is reported as such.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..models.base import DeployableModel
from ..runtime.backends import create_backend, runnable_backends, split_name
from .torch_backend import TorchEagerBackend

# Relative L2 error above which a stage is said to diverge. fast-reid's own deployment check and
# the embedding gate use 1e-3 on the final features; float32 noise in a stage stays near 1e-6..1e-5.
DEFAULT_THRESHOLD = 1e-3
MAX_STAGE_OUTPUTS = 400  # hooked tensors in the explain graph; more only slows the export down
_CONTAINERS = (nn.ModuleList, nn.ModuleDict)
# Engines that run the ONNX graph (directly or converted); their float32 file is re-made here.
_ONNX_ENGINES = ("onnxruntime", "openvino")


@dataclass
class StageResult:
    stage: str
    shape: tuple
    max_abs: float = 0.0
    rel_l2: float = 0.0
    cosine: float = 1.0
    nonfinite: int = 0       # NaN/Inf in the backend's tensor
    ref_nonfinite: int = 0   # NaN/Inf in PyTorch's
    finite_where_ref_not: int = 0  # values the backend has where PyTorch overflowed: not the true ones either
    note: str = ""
    diverged: bool = False

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class Explanation:
    backend: str
    input: str
    stages: list[StageResult] = field(default_factory=list)
    bundle_vs_explain: Optional[float] = None   # relative L2 of the bundle's own outputs vs the explain graph's

    @property
    def first_divergence(self) -> Optional[StageResult]:
        return next((s for s in self.stages if s.diverged), None)

    @property
    def first_reference_nonfinite(self) -> Optional[StageResult]:
        return next((s for s in self.stages if s.ref_nonfinite), None)


# --- stages -----------------------------------------------------------------------------------

def _flatten(name: str, value) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of a module's output: tensors in tuples, lists and dicts, in order."""
    if isinstance(value, torch.Tensor):
        return [(name, value)]
    if isinstance(value, (tuple, list)):
        return [p for i, v in enumerate(value) for p in _flatten(f"{name}[{i}]", v)]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _flatten(f"{name}[{k}]", v)]
    return []  # anything else (None, structures) has nothing an engine returns


def _called_modules(module: nn.Module, args: tuple) -> set[str]:
    called: set[str] = set()
    hooks = [m.register_forward_hook(lambda m_, i, o, n=n: called.add(n)) for n, m in module.named_modules() if n]
    try:
        with torch.no_grad():
            module(*args)
    finally:
        for h in hooks:
            h.remove()
    return called


def select_stages(module: nn.Module, args: tuple, depth: int = 2) -> list[str]:
    """The module's declared `explain_stages`, or the called modules at most `depth` levels down
    (uncalled containers and single-module wrappers are not levels)."""
    declared = getattr(module, "explain_stages", None)
    if declared:
        names = dict(module.named_modules())
        unknown = [s for s in declared if s not in names]
        if unknown:
            raise ValueError(f"explain_stages names no submodule {unknown[0]!r}")
        return list(declared)
    called = _called_modules(module, args)
    stages = []

    def walk(prefix: str, mod: nn.Module, level: int):
        kids = list(mod.named_children())
        # the one module inside a wrapper (input normalisation, static outputs) is not a level down
        kid_level = level if len(kids) == 1 else level + 1
        if kid_level > depth:
            return
        for name, child in kids:
            full = f"{prefix}{name}"
            if full in called:
                stages.append(full)
                walk(full + ".", child, kid_level)
            else:  # never called itself (ModuleList, a Sequential run block by block): not a level
                walk(full + ".", child, kid_level - 1)

    walk("", module, 0)
    return stages


class _Tapped(nn.Module):
    """The model, returning its own outputs and then every hooked stage output (cloned, so that a
    later in-place op cannot change what was recorded, in eager mode or in the traced graph)."""

    def __init__(self, module: nn.Module, stages: Sequence[str]):
        super().__init__()
        self.module = module
        self._taps: list[tuple[str, torch.Tensor]] = []
        self._calls: dict[str, int] = {}
        mods = dict(module.named_modules())
        self._hooks = [mods[s].register_forward_hook(self._hook(s)) for s in stages]

    def _hook(self, stage: str):
        def record(_m, _inputs, output):
            k = self._calls[stage] = self._calls.get(stage, 0) + 1
            name = stage if k == 1 else f"{stage}#{k}"
            self._taps.extend((n, t.clone()) for n, t in _flatten(name, output))
        return record

    def forward(self, *inputs):
        self._taps, self._calls = [], {}
        out = self.module(*inputs)
        out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        return (*out, *(t for _, t in self._taps[:MAX_STAGE_OUTPUTS]))

    def tap_names(self) -> list[str]:
        return [n for n, _ in self._taps[:MAX_STAGE_OUTPUTS]]

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()


# --- comparison -------------------------------------------------------------------------------

def compare_stage(stage: str, ref: np.ndarray, got: np.ndarray, threshold: float) -> StageResult:
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape:
        return StageResult(stage, tuple(ref.shape), float("inf"), float("inf"), float("nan"),
                           note=f"shape {tuple(got.shape)} != PyTorch's {tuple(ref.shape)}", diverged=True)
    a, b = got.astype(np.float64), ref.astype(np.float64)
    fin_a, fin_b = np.isfinite(a), np.isfinite(b)
    r = StageResult(stage, tuple(ref.shape), nonfinite=int((~fin_a).sum()), ref_nonfinite=int((~fin_b).sum()))
    both = fin_a & fin_b
    # statistics over the elements both engines have finite; non-finite ones are counted apart
    d, b_ = (a - b)[both], b[both]
    if d.size:
        r.max_abs = float(np.abs(d).max())
        nb = float(np.linalg.norm(b_))
        r.rel_l2 = float(np.linalg.norm(d) / nb) if nb > 0 else (0.0 if not d.any() else float("inf"))
        na = float(np.linalg.norm(a[both]))
        r.cosine = float((a[both] * b_).sum() / (na * nb)) if na > 0 and nb > 0 else float(na == nb)
    new_nonfinite = int((~fin_a & fin_b).sum())
    if new_nonfinite:
        r.diverged, r.note = True, f"{new_nonfinite} NaN/Inf where PyTorch is finite"
    elif r.rel_l2 > threshold:
        r.diverged, r.note = True, f"relative L2 {r.rel_l2:.2e} > {threshold:g}"
    r.finite_where_ref_not = int((fin_a & ~fin_b).sum())
    if r.ref_nonfinite:
        r.note = (r.note + "; " if r.note else "") + f"PyTorch itself has {r.ref_nonfinite} NaN/Inf" + (
            f", the backend {r.finite_where_ref_not} finite values there" if r.finite_where_ref_not else "")
    return r


# --- running ----------------------------------------------------------------------------------

def _explain_backend(name: str, bundle, onnx_path: Path, ir_path: Optional[Path], out_names: list[str]):
    """The runtime's own backend (same engine options as verify), pointed at the explain graph."""
    runner = create_backend(name, bundle)
    path = ir_path if split_name(name)[0].format == "openvino" else onnx_path
    runner.model_path = lambda: path
    runner.output_names = list(out_names)
    return runner.load()


def explain_bundle(bundle, deployable: Optional[DeployableModel] = None, *, images: Sequence = (),
                   backends: Optional[Sequence[str]] = None, weights: Optional[str] = None,
                   threshold: float = DEFAULT_THRESHOLD, depth: int = 2, log=print) -> list[Explanation]:
    """Compare every stage of the PyTorch model with each ONNX-based backend; print and return it."""
    from .formats import DEFAULT_OPSET, export_onnx, export_openvino
    from .verify import _inputs

    names = list(backends or runnable_backends(bundle))
    skipped = [b for b in names if split_name(b)[0].name not in _ONNX_ENGINES or split_name(b)[1] == "int8"]
    names = [b for b in names if b not in skipped]
    for b in skipped:
        log(f"explain: {b} skipped (stage outputs are re-exported as a float32 ONNX graph, "
            f"which only {' and '.join(_ONNX_ENGINES)} run)")
    if not names:
        raise UserError(f"{bundle.path}: --explain needs an onnxruntime or openvino backend "
                        f"(this bundle offers: {', '.join(runnable_backends(bundle)) or 'none'})")
    dm = TorchEagerBackend(bundle, deployable=deployable, weights=weights).load().deployable
    cases = [(name, prep) for name, _, prep in _inputs(bundle, images)]
    in_names = [t.name for t in bundle.contract.inputs]
    out_names = [t.name for t in bundle.contract.outputs]
    example = tuple(torch.from_numpy(cases[0][1].inputs[n]) for n in in_names)
    module = dm.module.eval()
    tapped = _Tapped(module, select_stages(module, example, depth))
    try:
        with torch.no_grad():
            tapped(*example)
        taps = tapped.tap_names()
        if len(set(taps)) != len(taps):  # two stages' outputs flattened to the same name: a bug here
            raise RuntimeError(f"duplicate stage output names: {taps}")
        all_names = out_names + taps
        prov = bundle.meta.get("provenance", {})
        meta = {"inputs": [dict(i) for i in bundle.meta["inputs"]],
                # every dimension of a stage output may follow the input's: all of them are dynamic
                "outputs": [dict(o) for o in bundle.meta["outputs"]]
                           + [{"name": t, "shape": [f"{t}_{i}" for i in range(v.dim())]}
                              for t, v in tapped._taps[:MAX_STAGE_OUTPUTS]]}
        wrapped = DeployableModel(tapped, dict(dm.spec, inputs=bundle.meta["inputs"]), batchable=dm.batchable)
        feeds = {n: cases[0][1].inputs[n] for n in in_names}
        with tempfile.TemporaryDirectory(prefix="vdeploy-explain-") as tmp:
            folder = Path(tmp)
            log(f"explain: exporting {len(taps)} stage outputs with the PyTorch model "
                f"(opset {prov.get('opset', DEFAULT_OPSET)}) ...")
            export_onnx(wrapped, dict(meta), feeds, folder, opset=int(prov.get("opset") or DEFAULT_OPSET),
                        slim=bool(prov.get("onnx_slimmed")))
            ir = None
            if any(split_name(b)[0].format == "openvino" for b in names):
                export_openvino(wrapped, dict(meta), feeds, folder, onnx_path=folder / "model.onnx")
                ir = folder / "model.xml"
            runners = {b: _explain_backend(b, bundle, folder / "model.onnx", ir, all_names) for b in names}
            bundle_runners = {b: create_backend(b, bundle).load() for b in names}
            results = []
            for case, prep in cases:
                with torch.no_grad():
                    ref = [t.numpy() for t in tapped(*(torch.from_numpy(prep.inputs[n]) for n in in_names))]
                for b in names:
                    got = runners[b].infer(prep.inputs)
                    ex = Explanation(b, case)
                    ex.stages = [compare_stage(n, r, got[n], threshold) for n, r in zip(taps, ref[len(out_names):])]
                    ex.stages += [compare_stage(f"output {n}", r, got[n], threshold)
                                  for n, r in zip(out_names, ref[:len(out_names)])]
                    own = bundle_runners[b].infer(prep.inputs)
                    ex.bundle_vs_explain = max((compare_stage(n, got[n], own[n], threshold).rel_l2 for n in out_names),
                                               default=0.0)
                    results.append(ex)
    finally:
        tapped.remove()
    _report(results, threshold, log)
    return results


# --- report -----------------------------------------------------------------------------------

def summary(ex: Explanation, threshold: float) -> str:
    first, ref_bad = ex.first_divergence, ex.first_reference_nonfinite
    where = f"{ex.backend} on {Path(ex.input).name}: "
    if first is not None:
        line = (where + f"first divergence at {first.stage} ({first.note}; max abs {first.max_abs:.3g}, "
                f"cosine {first.cosine:.6f})")
    else:
        worst = max(ex.stages, key=lambda s: s.rel_l2, default=None)
        line = where + f"all {len(ex.stages)} stages agree (relative L2 <= {threshold:g}" + (
            f"; largest {worst.rel_l2:.2e} at {worst.stage})" if worst else ")")
    if ref_bad is not None:
        line += (f"; PyTorch itself is non-finite from {ref_bad.stage} on ({ref_bad.ref_nonfinite} NaN/Inf): "
                 "the model leaves float32's range on this input, no engine can be judged past that stage")
        if ref_bad.finite_where_ref_not or any(s.finite_where_ref_not for s in ex.stages):
            later = next(s for s in ex.stages if s.finite_where_ref_not)
            line += f" ({ex.backend} has finite values from {later.stage} on, which are not the model's either)"
    if ex.bundle_vs_explain is not None and ex.bundle_vs_explain > threshold:
        line += (f"; the bundle's own {ex.backend} model differs from this fresh export (relative L2 "
                 f"{ex.bundle_vs_explain:.2e}): its file was changed after export, or was exported otherwise")
    return line


def _report(results: list[Explanation], threshold: float, log) -> None:
    from rich.console import Console
    from rich.table import Table

    for b in dict.fromkeys(r.backend for r in results):
        mine = [r for r in results if r.backend == b]
        t = Table(title=f"{b} against PyTorch, stage by stage (worst of {len(mine)} inputs per stage)")
        for c in ("stage", "shape", "max abs", "rel L2", "cosine", "NaN/Inf (backend / PyTorch)", "input", "verdict"):
            t.add_column(c)
        for i, _ in enumerate(mine[0].stages):
            rows = [(r.stages[i], r.input) for r in mine]
            # the input that shows the stage at its worst: diverged, then PyTorch or the backend non-finite
            s, case = max(rows, key=lambda p: (p[0].diverged, p[0].ref_nonfinite + p[0].nonfinite, p[0].rel_l2))
            t.add_row(s.stage, "x".join(map(str, s.shape)), f"{s.max_abs:.2e}", f"{s.rel_l2:.2e}", f"{s.cosine:.6f}",
                      f"{s.nonfinite} / {s.ref_nonfinite}", Path(case).name,
                      ("DIVERGES: " + s.note) if s.diverged else ("ok" + (f" ({s.note})" if s.note else "")))
        Console(width=170).print(t)
    for r in results:
        log(summary(r, threshold))
