"""Panoptic CenterMask: detectron2's PanopticFPN meta-architecture with centermask2's FCOS proposals
and CenterROIHeads (centermask2's `panoptic_centermask_*` configs), one image.

forward(images, im_info) -> CenterMask's outputs + (sem_seg_logits [1, C, H, W],). The combination
of instances and semantic labels into panoptic segments happens on the host, as for PanopticFPN
(`vdeploy.runtime.postprocess.panoptic`).
"""
from __future__ import annotations

import torch
from torch import nn

from .meta_arch import CenterMask


class PanopticCenterMask(CenterMask):
    def __init__(self, backbone: nn.Module, proposal_generator: nn.Module, roi_heads: nn.Module,
                 sem_seg_head: nn.Module, **pixels):
        super().__init__(backbone, proposal_generator, roi_heads, **pixels)
        self.sem_seg_head = sem_seg_head

    def forward(self, images: torch.Tensor, im_info: torch.Tensor):
        features = self.features(images)
        detections = self.proposal_generator(features)
        return tuple(self.roi_heads(features, detections, im_info[0])) + (self.sem_seg_head(features),)
