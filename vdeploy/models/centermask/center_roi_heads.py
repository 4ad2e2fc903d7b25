"""CenterMask's ROI heads: masks (and mask IoU) for the FCOS detections, which are final as they are.

There is no box head: the FCOS boxes, scores and classes pass through unchanged; the mask head
pools features at each box and predicts the mask of its class; the MaskIoU head rescores it.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..detectron2.box_ops import box_area
from ..detectron2.poolers import ROIPooler
from .maskiou import MaskIoUHead
from .sag_mask import SpatialAttentionMaskHead

ASSIGN_CRITERIA = ("area", "ratio")


def assign_levels_by_ratio(boxes: torch.Tensor, image_hw: torch.Tensor, min_level: int, max_level: int) -> torch.Tensor:
    """CenterMask's adaptive ROI assignment: level = ceil(max_level - log2(image area / box area)),
    clamped; returned as an index from `min_level`. `image_hw` is the valid (resized) size."""
    image_area = image_hw[0].to(boxes.dtype) * image_hw[1].to(boxes.dtype)
    levels = torch.ceil(max_level - torch.log2(image_area / box_area(boxes)))
    return torch.clamp(levels, min=min_level, max=max_level).to(torch.int64) - min_level


class RatioROIPooler(ROIPooler):
    """detectron2's ROIPooler with the box-to-level rule of `assign_levels_by_ratio`.

    forward(features, boxes [N, 4], image_hw [2]) -> [N, C, S, S].
    """

    def forward(self, features: list[torch.Tensor], boxes: torch.Tensor, image_hw: torch.Tensor) -> torch.Tensor:
        if len(features) != len(self.scales):
            raise ValueError(f"ROIPooler built for {len(self.scales)} levels, got {len(features)}")
        rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], dim=1)
        if len(features) == 1:
            return self._pool(features[0], rois, self.scales[0])
        levels = assign_levels_by_ratio(boxes, image_hw, self.min_level, self.max_level)
        out = boxes.new_zeros((boxes.shape[0], features[0].shape[1]) + self.output_size)
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            inds = torch.nonzero(levels == level).squeeze(1)
            out = out.index_put((inds,), self._pool(feature, rois[inds], scale))
        return out


class CenterROIHeads(nn.Module):
    """Masks and mask scores for given detections.

    Args:
        in_features: pyramid levels the masks are pooled from (e.g. p3, p4, p5).
        mask_pooler: ROIPooler (area rule) or RatioROIPooler; mask_head: SpatialAttentionMaskHead.
        maskiou_head: MaskIoUHead or None (MODEL.MASKIOU_ON).

    forward(features, (boxes, scores, classes), image_hw) -> (boxes, scores, classes, mask_probs
    [N, M, M][, mask_scores [N] = score x predicted mask IoU]); without a mask head, the detections
    alone. `scores` are never changed: centermask2 keeps the mask score in its own field.
    """

    def __init__(self, in_features: Sequence[str], mask_pooler: Optional[ROIPooler] = None,
                 mask_head: Optional[SpatialAttentionMaskHead] = None, maskiou_head: Optional[MaskIoUHead] = None):
        super().__init__()
        if (mask_pooler is None) != (mask_head is None):
            raise ValueError("a mask head needs a mask pooler and vice versa")
        if maskiou_head is not None and mask_head is None:
            raise ValueError("the MaskIoU head rescores masks: it needs a mask head")
        self.in_features = tuple(in_features)
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.maskiou_head = maskiou_head

    @property
    def mask_on(self) -> bool:
        return self.mask_head is not None

    def forward(self, features: dict[str, torch.Tensor], detections: tuple, image_hw: torch.Tensor) -> tuple:
        boxes, scores, classes = detections[:3]
        if self.mask_head is None:
            return boxes, scores, classes
        feats = [features[f] for f in self.in_features]
        if isinstance(self.mask_pooler, RatioROIPooler):
            pooled = self.mask_pooler(feats, boxes, image_hw)
        else:
            pooled = self.mask_pooler(feats, boxes)
        mask_probs = self.mask_head(pooled, classes)
        if self.maskiou_head is None:
            return boxes, scores, classes, mask_probs
        mask_iou = self.maskiou_head(pooled, mask_probs, classes)
        return boxes, scores, classes, mask_probs, scores * mask_iou
