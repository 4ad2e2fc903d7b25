"""Exporters, one function per format; each writes to a temporary name and renames on success."""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..models.base import DeployableModel
from ..registry import Registry

DEFAULT_OPSET = 17
Exporter = Callable[..., list[str]]
EXPORTERS: Registry[Exporter] = Registry("export format")


@contextlib.contextmanager
def _staged(path: Path):
    """Yield a temporary path beside `path`; move it into place only when the block succeeds."""
    tmp = path.with_name(f".{path.name}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _args(dm: DeployableModel, inputs: dict[str, np.ndarray]) -> tuple:
    return tuple(torch.from_numpy(inputs[i["name"]]) for i in dm.spec["inputs"])


def _dynamic_axes(meta: dict) -> dict:
    axes = {}
    for t in meta["inputs"] + meta["outputs"]:
        dyn = {i: d for i, d in enumerate(t.get("shape") or []) if isinstance(d, str)}
        if dyn:
            axes[t["name"]] = dyn
    return axes


ONNX_DATA = "model.onnx.data"   # the tensors of a graph over protobuf's 2 GB limit (ViT-H, ...)


def _readable_like_the_rest(path: Path) -> None:
    """onnx writes its external-data file owner-only; a bundle's files get the umask's permissions
    like every other file, so that a server running as another user can read them."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@EXPORTERS.register("onnx")
def export_onnx(dm: DeployableModel, meta: dict, inputs: dict, folder: Path, *, opset: int = DEFAULT_OPSET,
                slim: bool = False, **_) -> list[str]:
    import tempfile

    import onnx

    path = folder / "model.onnx"
    with tempfile.TemporaryDirectory(prefix=".onnx-export-", dir=folder) as work, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = Path(work) / "model.onnx"
        with torch.inference_mode(False), torch.no_grad():
            if dm.before_trace is not None:
                dm.before_trace()
            torch.onnx.export(dm.module, _args(dm, inputs), str(raw), dynamo=False, opset_version=opset,
                              input_names=[i["name"] for i in meta["inputs"]],
                              output_names=[o["name"] for o in meta["outputs"]],
                              dynamic_axes=_dynamic_axes(meta) or None, do_constant_folding=True)
        # Over 2 GB the exporter writes each tensor as a file beside the graph: checked and
        # shape-inferred by path, then saved with all tensors in one file next to model.onnx.
        large = any(p.name != raw.name for p in Path(work).iterdir())
        if large and slim:
            from ..errors import UserError
            raise UserError("--slim: this model's ONNX graph is over 2 GB, which onnxslim cannot rewrite in memory")
        with _staged(path) as tmp:
            if large:
                inferred = Path(work) / "inferred.onnx"
                onnx.shape_inference.infer_shapes_path(str(raw), str(inferred))
                onnx.checker.check_model(str(inferred), full_check=True)
                onnx.save_model(onnx.load(str(inferred)), str(tmp), save_as_external_data=True,
                                all_tensors_to_one_file=True, location=ONNX_DATA, size_threshold=1024)
                _readable_like_the_rest(folder / ONNX_DATA)
            else:
                model = onnx.load(str(raw))
                onnx.checker.check_model(model, full_check=True)
                model = onnx.shape_inference.infer_shapes(model)
                if slim:
                    import onnxslim

                    model = onnxslim.slim(model)
                    onnx.checker.check_model(model)
                onnx.save(model, str(tmp))
    meta.setdefault("provenance", {}).update(opset=opset, onnx=onnx.__version__, onnx_slimmed=slim)
    return ["model.onnx", ONNX_DATA] if large else ["model.onnx"]


@EXPORTERS.register("torchscript")
def export_torchscript(dm: DeployableModel, meta: dict, inputs: dict, folder: Path, **_) -> list[str]:
    path = folder / "model.ts"
    with _staged(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            if dm.before_trace is not None:
                dm.before_trace()
            try:
                # Scripting keeps shape-dependent logic; tracing freezes it to the example's shape.
                module = torch.jit.script(dm.module)
                how = "script"
            except Exception:
                module = torch.jit.trace(dm.module, _args(dm, inputs), check_trace=False, strict=False)
                how = "trace"
        torch.jit.save(module, str(tmp))
    meta.setdefault("provenance", {})["torchscript"] = how
    return ["model.ts"]


@EXPORTERS.register("openvino")
def export_openvino(dm: DeployableModel, meta: dict, inputs: dict, folder: Path, *, onnx_path: Path | None = None,
                    **kw) -> list[str]:
    """OpenVINO IR converted from the ONNX graph (made on the side when onnx was not asked for)."""
    import openvino as ov

    side = None
    if onnx_path is None or not onnx_path.exists():
        side = folder / ".openvino-src"
        side.mkdir(exist_ok=True)
        export_onnx(dm, dict(meta, provenance={}), inputs, side, **kw)
        onnx_path = side / "model.onnx"
    try:
        model = ov.convert_model(str(onnx_path))
        # OpenVINO insists on a .xml name: stage in a hidden folder, then move both files.
        stage = folder / ".openvino-partial"
        stage.mkdir(exist_ok=True)
        ov.save_model(model, str(stage / "model.xml"), compress_to_fp16=False)
        os.replace(stage / "model.bin", folder / "model.bin")
        os.replace(stage / "model.xml", folder / "model.xml")
    finally:
        import shutil

        for d in (side, folder / ".openvino-partial"):
            if d is not None:
                shutil.rmtree(d, ignore_errors=True)
    meta.setdefault("provenance", {})["openvino"] = ov.get_version()
    return ["model.xml", "model.bin"]
