"""Backends by name. One line per backend; "torch" (the original eager model) lives on the torch
side and is named here by module path so that this package never imports torch."""
from __future__ import annotations

import importlib

from ...errors import UserError

BACKENDS = {
    "onnxruntime": "vdeploy.runtime.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "vdeploy.runtime.backends.openvino:OpenVinoBackend",
    "torchscript": "vdeploy.runtime.backends.torchscript:TorchScriptBackend",
    "torch": "vdeploy.export.torch_backend:TorchEagerBackend",
}
# Which bundle format each backend reads ("torch" rebuilds the model from provenance).
BACKEND_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino", "torchscript": "torchscript", "torch": None}
ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "ov": "openvino", "ts": "torchscript", "pytorch": "torch"}


def backend_class(name: str):
    name = ALIASES.get(name, name)
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; choose from: {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise UserError(f"backend {name!r} needs a package that is not installed ({e.name})") from None


def create_backend(name: str, bundle, **options):
    return backend_class(name)(bundle, **options)


def default_backend(bundle) -> str:
    for name in ("onnxruntime", "openvino", "torchscript"):
        if BACKEND_FORMAT[name] in bundle.formats:
            return name
    raise UserError(f"{bundle.path}: has no model file any backend can run")
