"""CenterMask (and plain FCOS) as one exportable module: normalise -> backbone -> FCOS -> masks."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .center_roi_heads import CenterROIHeads
from .fcos import FCOS


class CenterMask(nn.Module):
    """centermask2's GeneralizedRCNN with an FCOS proposal generator and CenterROIHeads, one image.

    forward(images [1, 3, H, W] float32 raw 0-255 pixels in the model's colour order, resized and
    padded bottom/right with the pixel mean; im_info [1, 2] = valid (height, width))
    -> boxes [N, 4] (x1, y1, x2, y2 in resized-image pixels, unclipped), scores [N], classes [N]
    int64 [, mask_probs [N, M, M] [, mask_scores [N]]]: centermask2's detections before
    `detector_postprocess`.
    """

    def __init__(self, backbone: nn.Module, proposal_generator: FCOS, roi_heads: CenterROIHeads, *,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float]):
        super().__init__()
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"PIXEL_MEAN {pixel_mean} and PIXEL_STD {pixel_std} differ in length")
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.backbone((images - self.pixel_mean) / self.pixel_std)

    def forward(self, images: torch.Tensor, im_info: torch.Tensor):
        features = self.features(images)
        detections = self.proposal_generator(features)
        return tuple(self.roi_heads(features, detections, im_info[0]))
