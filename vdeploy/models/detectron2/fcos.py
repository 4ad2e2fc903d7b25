"""FCOS (detectron2's `meta_arch.fcos.FCOS` semantics), inference only, written to trace into ONNX.

An anchor-free dense detector: one "anchor" per feature-map cell (a stride-sized box centred on
the cell centre: anchor offset 0.5, the anchor generator's own default that FCOS keeps), a RetinaNet head plus a centerness branch on the box
tower, and box regression as (left, top, right, bottom) distances from the cell centre in units
of the level's stride. The candidate selection (threshold, per-level top-k, class-wise NMS) is
RetinaNet's, shared through `RetinaNet.select`; only the scoring differs:
score = sqrt(sigmoid(class logit) * sigmoid(centerness)).

Graph contract as RetinaNet: `images` (raw pixels, resized and padded by the host) -> boxes in
resized-image pixels (not clipped), scores, 0-based classes.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .retinanet import RetinaNet, RetinaNetHead
from .rpn import AnchorGenerator


class FCOSHead(RetinaNetHead):
    """RetinaNet's towers with one anchor per cell, plus `ctrness` (a 3x3 conv on the box tower)."""

    def __init__(self, *, in_channels: int, num_classes: int, num_convs: int, prior_prob: float = 0.01,
                 norm: str = ""):
        super().__init__(in_channels=in_channels, num_classes=num_classes, num_anchors=1, num_convs=num_convs,
                         prior_prob=prior_prob, norm=norm)
        self.ctrness = nn.Conv2d(in_channels, 1, 3, padding=1)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        logits, deltas, centerness = [], [], []
        for f in features:
            logits.append(self.cls_score(self.cls_subnet(f)))
            box_features = self.bbox_subnet(f)
            deltas.append(self.bbox_pred(box_features))
            centerness.append(self.ctrness(box_features))
        return logits, deltas, centerness


class DistanceBoxTransform:
    """Decode (l, t, r, b) distances from a reference box's centre, scaled by the box's size
    (detectron2's Box2BoxTransformLinear(normalize_by_size=True)); negative distances count as 0."""

    def apply_deltas(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """deltas [R, 4], boxes [R, 4] -> boxes [R, 4]."""
        deltas = deltas.float().clamp(min=0)
        boxes = boxes.to(deltas.dtype)
        size = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1).repeat(1, 2)
        centre = ((boxes[:, :2] + boxes[:, 2:]) * 0.5).repeat(1, 2)
        sign = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=deltas.dtype)
        return centre + sign * deltas * size


class FCOS(RetinaNet):
    """Normalise -> backbone (FPN P3-P7) -> FCOSHead -> per-level candidates -> class-wise NMS.

    Args:
        backbone, head_in_features, num_classes, pixel_mean, pixel_std, score_thresh,
        topk_candidates, nms_thresh, max_detections: as RetinaNet.
        head: FCOSHead. strides: stride of each head input level (the anchors' sizes too).
    """

    def __init__(self, *, backbone: nn.Module, head: FCOSHead, head_in_features: Sequence[str], strides: Sequence[int],
                 num_classes: int, pixel_mean: Sequence[float], pixel_std: Sequence[float],
                 score_thresh: float = 0.2, topk_candidates: int = 1000, nms_thresh: float = 0.6,
                 max_detections: int = 100):
        anchors = AnchorGenerator([[float(s)] for s in strides], [[1.0]], strides, 0.5)
        super().__init__(backbone=backbone, head=head, anchors=anchors, head_in_features=head_in_features,
                         num_classes=num_classes, box_transform=DistanceBoxTransform(), pixel_mean=pixel_mean,
                         pixel_std=pixel_std, score_thresh=score_thresh, topk_candidates=topk_candidates,
                         nms_thresh=nms_thresh, max_detections=max_detections)

    def forward(self, images: Tensor, im_info: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
        """im_info is accepted (and ignored) for the detectron2 graph contract."""
        feats = self.features(images)
        feats = [feats[name] for name in self.head_in_features]
        logits, deltas, centerness = self.head(feats)
        probs = [torch.sqrt(logit.sigmoid() * ctr.sigmoid()) for logit, ctr in zip(logits, centerness)]
        return self.select(probs, deltas, self.anchors(feats))
