"""Turn a DeployableModel's spec into deploy.json metadata for a fixed or dynamic export."""
from __future__ import annotations

import copy
from typing import Optional

import numpy as np

from ..models.base import DeployableModel
from ..runtime.bundle import Bundle


def bundle_meta(dm: DeployableModel, input_size: Optional[tuple[int, int]]) -> dict:
    meta = copy.deepcopy(dm.spec)
    meta["input_size"] = list(input_size) if input_size else None
    meta["batchable"] = bool(dm.batchable)
    meta["provenance"] = dict(dm.provenance)
    meta.setdefault("files", {})
    if input_size:
        h, w = input_size
        for inp in meta["inputs"]:
            shape = inp.get("shape")
            if shape and len(shape) == 4:
                inp["shape"] = [shape[0] if isinstance(shape[0], int) else (shape[0] if dm.batchable else 1), 3, int(h), int(w)]
    return meta


def in_memory_bundle(dm: DeployableModel, input_size=None) -> Bundle:
    """A Bundle object with no files, to run the eager model through the runtime's pipeline."""
    from pathlib import Path

    return Bundle(Path(dm.provenance.get("source", "model")), bundle_meta(dm, input_size))


def synthetic_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic photo-like BGR image: smooth colour fields plus blobs, so that even a
    randomly initialised detector sees structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(1, 4), rng.uniform(1, 4), rng.uniform(0, 6.28)
        img[..., c] = 127 + 60 * np.sin(xx / w * fx * 6.28 + ph) * np.cos(yy / h * fy * 6.28)
    for _ in range(6):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(0.05, 0.2) * min(h, w)
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
        img[blob] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 8, img.shape)
    return img.clip(0, 255).astype(np.uint8)
