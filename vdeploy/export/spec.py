"""Turn a DeployableModel's spec into deploy.json metadata for a fixed or dynamic export."""
from __future__ import annotations

import copy
from typing import Optional

import numpy as np

from ..models.base import DeployableModel
from ..bundle import Bundle
from ..runtime.synthetic import synthetic_image  # noqa: F401  (re-exported for the exporters)


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
