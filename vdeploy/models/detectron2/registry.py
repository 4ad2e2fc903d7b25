"""Registries of the detectron2 building blocks, filled by the modules that define them.

Each entry is a *builder* `fn(cfg: dict, input_shapes: dict[str, ShapeSpec]) -> nn.Module`
living at the config edge (`vdeploy.frameworks.detectron2.build`), or a module class; the
models themselves never read a config. Names are detectron2's config names
(`MODEL.META_ARCHITECTURE`, `MODEL.ROI_HEADS.NAME`, `MODEL.PROPOSAL_GENERATOR.NAME`,
`MODEL.BACKBONE.NAME`), so a config value looks its builder up directly.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...registry import Registry

META_ARCHS: Registry = Registry("detectron2 meta architecture")
ROI_HEADS: Registry = Registry("detectron2 ROI heads")
PROPOSAL_GENERATORS: Registry = Registry("detectron2 proposal generator")
BACKBONES: Registry = Registry("detectron2 backbone")


@dataclass(frozen=True)
class ShapeSpec:
    """Channels and stride of one named feature map (detectron2's ShapeSpec, minus H/W)."""

    channels: int
    stride: int
