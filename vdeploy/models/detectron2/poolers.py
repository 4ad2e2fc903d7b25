"""detectron2's ROIPooler: multi-level ROIAlign with its box-to-level assignment, in-graph.

Only ROIAlign (`aligned=False`) and ROIAlignV2 (`aligned=True`) are supported; both are
`torchvision.ops.roi_align`, which exports to ONNX RoiAlign.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torchvision.ops import roi_align

from .box_ops import box_area

POOLER_TYPES = {"ROIAlign": False, "ROIAlignV2": True}


def assign_boxes_to_levels(boxes: torch.Tensor, min_level: int, max_level: int,
                           canonical_box_size: float, canonical_level: int) -> torch.Tensor:
    """Index (0-based from `min_level`) of the feature level each box [N, 4] is pooled from.

    FPN paper eq. 1: level = floor(canonical_level + log2(sqrt(area) / canonical_box_size)),
    clamped to the available levels.
    """
    box_sizes = torch.sqrt(box_area(boxes))
    levels = torch.floor(canonical_level + torch.log2(box_sizes / canonical_box_size + 1e-8))
    levels = torch.clamp(levels, min=min_level, max=max_level)
    return levels.to(torch.int64) - min_level


class ROIPooler(nn.Module):
    """Pool a fixed-size feature patch for each box from a list of feature maps.

    Args:
        output_size: side of the pooled patch (e.g. 7 for the box head, 14 for the mask head).
        scales: 1/stride of each feature map, finest first (e.g. 1/4 .. 1/32 for p2..p5).
        sampling_ratio: ROIAlign samples per bin side; 0 means adaptive (ceil(roi/bin)).
        pooler_type: "ROIAlignV2" (half-pixel aligned, detectron2's default) or "ROIAlign".
        canonical_box_size, canonical_level: a box of this side goes to this level (224, 4).

    forward(features: list[Tensor [1, C, H, W]], boxes: Tensor [N, 4]) -> Tensor [N, C, S, S].
    Single image only: every box belongs to batch index 0.
    """

    def __init__(self, output_size: int, scales: Sequence[float], sampling_ratio: int,
                 pooler_type: str = "ROIAlignV2", canonical_box_size: float = 224.0,
                 canonical_level: int = 4):
        super().__init__()
        if pooler_type not in POOLER_TYPES:
            raise ValueError(f"unsupported pooler type {pooler_type!r}; supported: {sorted(POOLER_TYPES)}")
        self.output_size = (int(output_size), int(output_size))
        self.scales = tuple(float(s) for s in scales)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = POOLER_TYPES[pooler_type]
        min_level = -math.log2(self.scales[0])
        max_level = -math.log2(self.scales[-1])
        if not (math.isclose(min_level, round(min_level)) and math.isclose(max_level, round(max_level))):
            raise ValueError(f"feature scales {scales} are not powers of 1/2")
        self.min_level, self.max_level = int(round(min_level)), int(round(max_level))
        if len(self.scales) != self.max_level - self.min_level + 1:
            raise ValueError(f"feature scales {scales} must be consecutive pyramid levels")
        self.canonical_box_size = float(canonical_box_size)
        self.canonical_level = int(canonical_level)

    def _pool(self, feature: torch.Tensor, rois: torch.Tensor, scale: float) -> torch.Tensor:
        return roi_align(feature, rois, self.output_size, spatial_scale=scale,
                         sampling_ratio=self.sampling_ratio, aligned=self.aligned)

    def forward(self, features: list[torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        if len(features) != len(self.scales):
            raise ValueError(f"ROIPooler built for {len(self.scales)} levels, got {len(features)}")
        # roi_align's box format: (batch index, x1, y1, x2, y2); one image, so index 0.
        rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], dim=1)
        if len(features) == 1:
            return self._pool(features[0], rois, self.scales[0])

        levels = assign_boxes_to_levels(boxes, self.min_level, self.max_level,
                                        self.canonical_box_size, self.canonical_level)
        # Each box is pooled from its own level only; rows are scattered back in box order.
        # in the features' dtype: under autocast (torch-bf16) they and roi_align's rows are bfloat16
        out = features[0].new_zeros((boxes.shape[0], features[0].shape[1]) + self.output_size)
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            inds = torch.nonzero(levels == level).squeeze(1)
            out = out.index_put((inds,), self._pool(feature, rois[inds], scale).to(out.dtype))
        return out
