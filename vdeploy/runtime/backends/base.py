"""One interface over every inference engine.

Loading is separate from running (as in Polygraphy): a backend is constructed from a bundle,
`load()` builds the session once, `infer()` checks inputs against the bundle's input spec and
calls the backend's small `_run` hook.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ...errors import BundleError, UserError


class Backend(ABC):
    """Subclasses set `name` and `format` and fill `_load` and `_run`."""

    name: str = ""
    format: str = ""  # the bundle format it reads ("onnx", "openvino", "torchscript"), "" for none
    requires: str = ""  # the package the engine lives in

    def __init__(self, bundle, *, threads: int | None = None, device: str = "cpu", precision: str = "fp32",
                 **options: Any):
        self.bundle = bundle
        self.precision = precision
        self.threads = threads
        self.device = device
        self.options = options
        self.input_names = [t.name for t in bundle.contract.inputs]
        self.output_names = [t.name for t in bundle.contract.outputs]
        self._loaded = False

    @classmethod
    def available(cls) -> bool:
        """Whether the engine's package is installed here (without importing it)."""
        import importlib.util

        try:
            return not cls.requires or importlib.util.find_spec(cls.requires) is not None
        except (ImportError, ValueError):  # a module blocked in sys.modules
            return False

    def load(self) -> "Backend":
        if not self._loaded:
            self._load()
            self._loaded = True
        return self

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.load()
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise UserError(f"{self.name}: missing inputs {missing}; the model takes {self.input_names}")
        feed = {}
        contract = self.bundle.contract
        for spec in contract.inputs:
            x = inputs[spec.name]
            want = np.dtype(spec.numpy_dtype)
            if x.dtype != want:
                x = x.astype(want)
            shape = list(spec.shape) if spec.shape else None
            if shape and len(shape) != x.ndim:
                raise UserError(f"{self.name}: input {spec.name} has {x.ndim} dims, the model wants {len(shape)}")
            if shape:
                for i, (got, dim) in enumerate(zip(x.shape, shape)):
                    if isinstance(dim, int) and dim > 0 and got != dim and not (i == 0 and contract.batchable):
                        raise UserError(f"{self.name}: input {spec.name} shape {x.shape} does not fit {shape}")
            feed[spec.name] = np.ascontiguousarray(x)
        outs = self._run(feed)
        return {n: np.asarray(v) for n, v in zip(self.output_names, outs)}

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def model_path(self):
        return self.bundle.model_file(self.format, self.precision)


def corrupt_model(path, err: Exception) -> BundleError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return BundleError(f"{path}: cannot load the model ({first[:200]})")
