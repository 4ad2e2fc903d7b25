"""detectron2's CascadeROIHeads at inference (Cascade R-CNN), as one exportable module.

Each stage has its own box head and predictor (class-agnostic regression with the stage's own
Box2BoxTransform weights). Stage k+1 re-pools the boxes that stage k regressed, clipped to the
image; nothing is filtered between stages, so every stage sees the same number of boxes. The
final scores are the mean of the stages' class probabilities, the final boxes those of the last
stage, and the mask head (when present) runs on the detections that survive NMS.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .box_ops import clip_boxes
from .poolers import ROIPooler
from .roi_heads import FastRCNNOutputLayers, fast_rcnn_inference


class CascadeROIHeads(nn.Module):
    """Args:
        in_features: feature names pooled by every stage (p2..p5).
        box_pooler: ROIPooler shared by the stages.
        box_heads, box_predictors: one FastRCNNConvFCHead / class-agnostic FastRCNNOutputLayers
            per stage; registered as `box_head.<k>` / `box_predictor.<k>`, detectron2's names.
        mask_pooler, mask_head, mask_in_features: as in StandardROIHeads (None: no masks).

    forward(features, proposals [P, 4], image_hw [2]) -> (boxes, scores, classes[, mask_probs]).
    The test-time thresholds (score, NMS, detections per image) are the last predictor's.
    """

    def __init__(self, in_features: Sequence[str], box_pooler: ROIPooler, box_heads: Sequence[nn.Module],
                 box_predictors: Sequence[FastRCNNOutputLayers], *, mask_pooler: Optional[ROIPooler] = None,
                 mask_head: Optional[nn.Module] = None, mask_in_features: Optional[Sequence[str]] = None):
        super().__init__()
        if not box_heads or len(box_heads) != len(box_predictors):
            raise ValueError(f"a cascade needs one predictor per box head, got {len(box_heads)} heads "
                             f"and {len(box_predictors)} predictors")
        if any(p.bbox_pred.out_features != 4 for p in box_predictors):
            # Stage k+1 needs one box per proposal; detectron2 has the same restriction.
            raise ValueError("cascade stages must use class-agnostic box regression")
        self.in_features = tuple(in_features)
        self.box_pooler = box_pooler
        self.box_head = nn.ModuleList(box_heads)
        self.box_predictor = nn.ModuleList(box_predictors)
        self.num_stages = len(box_heads)
        self.mask_on = mask_head is not None
        if self.mask_on:
            if mask_pooler is None:
                raise ValueError("a mask head needs a mask pooler")
            self.mask_in_features = tuple(mask_in_features or in_features)
            self.mask_pooler = mask_pooler
            self.mask_head = mask_head

    def box_outputs(self, features: dict[str, torch.Tensor], boxes: torch.Tensor,
                    stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs (class logits [R, K+1], deltas [R, 4]) of `stage` for the boxes [R, 4]."""
        x = self.box_pooler([features[f] for f in self.in_features], boxes)
        return self.box_predictor[stage](self.box_head[stage](x))

    def stage_inputs(self, deltas: torch.Tensor, boxes: torch.Tensor, stage: int,
                     image_hw: torch.Tensor) -> torch.Tensor:
        """The boxes stage `stage + 1` pools: `stage`'s regression of `boxes`, clipped to the image."""
        return clip_boxes(self.box_predictor[stage].predict_boxes(deltas, boxes), image_hw)

    def forward(self, features: dict[str, torch.Tensor], proposals: torch.Tensor, image_hw: torch.Tensor):
        boxes = proposals
        probs_sum = None
        deltas = None
        for stage in range(self.num_stages):
            if stage > 0:
                boxes = self.stage_inputs(deltas, boxes, stage - 1, image_hw)
            logits, deltas = self.box_outputs(features, boxes, stage)
            probs = self.box_predictor[stage].predict_probs(logits)
            probs_sum = probs if probs_sum is None else probs_sum + probs
        # Summed in stage order, then scaled, exactly as detectron2 averages them.
        scores = probs_sum * (1.0 / self.num_stages)
        last = self.box_predictor[-1]
        boxes, scores, classes = fast_rcnn_inference(
            last.predict_boxes(deltas, boxes), scores, image_hw, score_thresh=last.score_thresh,
            nms_thresh=last.nms_thresh, topk_per_image=last.topk_per_image)
        if not self.mask_on:
            return boxes, scores, classes
        x = self.mask_pooler([features[f] for f in self.mask_in_features], boxes)
        return boxes, scores, classes, self.mask_head(x, classes)
