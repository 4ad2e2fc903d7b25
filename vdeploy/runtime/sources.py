"""Open any source as a Predictor: a bundle folder here, anything else (a model config run through
PyTorch) through the opener an installed package declares under the `vdeploy.model_sources`
entry-point group. The runtime names no torch-side module."""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

from ..bundle import DEPLOY_JSON
from ..errors import UserError

ENTRY_POINT_GROUP = "vdeploy.model_sources"


def is_bundle(source) -> bool:
    return (Path(source) / DEPLOY_JSON).is_file()


def open_source(source: str, weights: str | None = None, backend: str | None = None, **options):
    if is_bundle(source):
        if weights:
            raise UserError("--weights applies to a model spec, not to a bundle (its weights are inside)")
        from .predictor import Predictor

        return Predictor(source, backend, **{k: v for k, v in options.items() if k != "input_size"})
    openers = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    if not openers:
        raise UserError(f"{source}: not a bundle, and no model-source plug-in is installed (pip install 'vdeploy[export]')")
    return openers[0].load()(source, weights, backend, **options)
