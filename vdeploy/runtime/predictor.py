"""Predictor: bundle + backend + the framework's pre/post-processing, one image at a time.

The three stages are public so that benchmarks and the evaluation pipeline can time them and
overlap them (decode/preprocess of the next image while the backend runs).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from .backends import create_backend, default_backend
from ..bundle import Bundle, load_bundle
from .postprocess import postprocess as _postprocess
from .prediction import Prediction
from .preprocess import Prepared, preprocess as _preprocess

__all__ = ["Predictor", "Prediction", "Prepared"]


class Predictor:
    def __init__(self, bundle: Bundle | str | os.PathLike, backend: str | None = None, *,
                 threads: int | None = None, device: str = "cpu", **options: Any):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.spec = self.bundle.meta
        self.backend_name = backend or default_backend(self.bundle)
        self.backend = create_backend(self.backend_name, self.bundle, threads=threads, device=device, **options)
        self.input_size = self.bundle.contract.input_size

    @classmethod
    def from_backend(cls, bundle: Bundle, backend) -> "Predictor":
        """Wrap an already constructed backend (e.g. the eager PyTorch model of a model spec)."""
        self = cls.__new__(cls)
        self.bundle, self.spec, self.backend = bundle, bundle.meta, backend
        self.backend_name = backend.name
        self.input_size = bundle.contract.input_size
        return self

    @property
    def task(self) -> str:
        return self.bundle.contract.task

    @property
    def classes(self) -> list[str]:
        return list(self.bundle.contract.classes)

    def load(self) -> "Predictor":
        self.backend.load()
        return self

    def preprocess(self, image_bgr: np.ndarray) -> Prepared:
        return _preprocess(image_bgr, self.spec, self.input_size)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.backend.infer(inputs)

    def postprocess(self, raw: dict[str, np.ndarray], meta: dict) -> Prediction:
        return _postprocess(raw, meta, self.spec)

    def predict(self, image_bgr: np.ndarray) -> Prediction:
        prep = self.preprocess(image_bgr)
        return self.postprocess(self.infer(prep.inputs), prep.meta)

    def predict_batch(self, images: list[np.ndarray]) -> list[Prediction]:
        """Several images in one call when the graph takes batches and they share a shape."""
        preps = [self.preprocess(im) for im in images]
        shapes = {tuple(p.inputs[self.bundle.input_names()[0]].shape) for p in preps}
        if not self.bundle.contract.batchable or len(shapes) != 1 or len(preps) == 1:
            return [self.postprocess(self.infer(p.inputs), p.meta) for p in preps]
        from .preprocess import stack

        raw = self.infer(stack(preps))
        return [self.postprocess({k: v[i:i + 1] for k, v in raw.items()}, p.meta) for i, p in enumerate(preps)]
