"""`tiny:NAME`: the small shape models trained by scripts/train_tiny.py (vdeploy.models.tiny)."""
from __future__ import annotations

from . import SOURCES, ModelSource

PREFIX = "tiny:"


def _claims(spec: str) -> bool:
    return spec.startswith(PREFIX)


def _build(spec: str, weights=None, **options):
    from ..models.tiny import build_tiny

    return build_tiny(spec[len(PREFIX):], weights, **options)


SOURCES.register("tiny", ModelSource("tiny", _claims, _build, precedence=0, reads_config=False))
