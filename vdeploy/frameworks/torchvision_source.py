"""`torchvision:NAME` model sources: classification, semantic segmentation, Mask/Faster R-CNN."""
from __future__ import annotations

from . import SOURCES, ModelSource

PREFIX = "torchvision:"


def _claims(spec: str) -> bool:
    return spec.startswith(PREFIX)


def _build(spec: str, weights=None, **options):
    from ..models.torchvision_models import build_torchvision

    return build_torchvision(spec[len(PREFIX):], weights, **options)


SOURCES.register("torchvision", ModelSource("torchvision", _claims, _build, precedence=0, reads_config=False))
