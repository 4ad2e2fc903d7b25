"""Reduced precision in a bundle: which file runs at which precision, recorded per file in
deploy.json (`files[...].precisions`) and named by the backends as `<engine>-<precision>`.

bf16 is an inference precision of the engine, not a file of its own: OpenVINO runs the float32
IR with bf16 arithmetic where the CPU has it (AVX512_BF16, AMX), and PyTorch through autocast
(`torch-bf16`, always available as the reference). ONNX Runtime's CPU provider has no bf16
convolution kernels, so it offers no bf16 backend.

int8 is a file of its own (model.int8.onnx, model.int8.xml/.bin), made by post-training static
quantization with calibration images (quantize.py).
"""
from __future__ import annotations

from typing import Sequence

from ..errors import UserError

PRECISIONS = ("fp32", "bf16", "int8")
# engine format -> the precisions its float32 file also runs at
RUNTIME_PRECISIONS = {"openvino": ("bf16",)}
# engine format -> the precisions written as files of their own
FILE_PRECISIONS = {"onnx": ("int8",), "openvino": ("int8",)}


def _served(fmt: str) -> tuple[str, ...]:
    return RUNTIME_PRECISIONS.get(fmt, ()) + FILE_PRECISIONS.get(fmt, ())


def check_precisions(precisions: Sequence[str], formats: Sequence[str]) -> None:
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise UserError(f"--precision {unknown[0]!r}: choose from {', '.join(PRECISIONS)}")
    if "fp32" not in precisions:
        raise UserError("--precision must include fp32: the float32 files are what the others are checked against")
    for p in precisions:
        if p != "fp32" and not any(p in _served(f) for f in formats):
            engines = [f for f in ("onnx", "openvino", "torchscript") if p in _served(f)]
            torch_too = f" (and PyTorch as torch-{p})" if p in RUNTIME_PRECISIONS.get("openvino", ()) else ""
            raise UserError(f"--precision {p} runs on {', '.join(engines)}{torch_too}; add it to --format")
    if "int8" in precisions and "openvino" in formats:
        import importlib.util

        if importlib.util.find_spec("nncf") is None:  # before any export work, not after it
            raise UserError("--precision int8 with --format openvino needs NNCF: pip install 'vdeploy[quant]'")


def mark_runtime_precisions(meta: dict, precisions: Sequence[str]) -> None:
    """Record on each float32 model file the reduced precisions its engine runs it at."""
    for info in meta["files"].values():
        if info.get("role", "model") != "model":
            continue
        extra = [p for p in precisions if p in RUNTIME_PRECISIONS.get(info["format"], ())]
        if extra:
            info["precisions"] = ["fp32", *extra]
