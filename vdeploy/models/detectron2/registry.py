"""Registries of detectron2 building blocks, keyed by detectron2's own config names.

Every entry is a *builder*: a function of the plain config dict (`vdeploy.frameworks.detectron2.
config.load_config`'s nested dict) that returns a module. Builders are config-edge code: they live
in `vdeploy/frameworks/detectron2/` (see `build.py`), read the config and pass plain keyword
arguments to the model classes of this package, which never see a config. Signatures:

- `META_ARCHS[MODEL.META_ARCHITECTURE](cfg) -> nn.Module` with `forward(images, im_info)`
  returning the tuple of outputs listed by the builder's spec (see `build.py`).
- `BACKBONES[MODEL.BACKBONE.NAME](cfg, in_channels: int) -> nn.Module` with
  `forward(x) -> dict[str, Tensor]`, `output_shape() -> dict[str, ShapeSpec]`, `size_divisibility`.
- `PROPOSAL_GENERATORS[MODEL.PROPOSAL_GENERATOR.NAME](cfg, shapes: dict[str, ShapeSpec])
  -> nn.Module` with `forward(features, image_hw) -> (boxes [P, 4], logits [P])`.
- `ROI_HEADS[MODEL.ROI_HEADS.NAME](cfg, shapes: dict[str, ShapeSpec]) -> nn.Module` with
  `forward(features, proposals [P, 4], image_hw [2]) -> (boxes, scores, classes[, mask_probs])`
  and `mask_on: bool`.
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
