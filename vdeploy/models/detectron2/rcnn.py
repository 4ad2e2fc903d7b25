"""detectron2's GeneralizedRCNN (Faster / Mask R-CNN, FPN, C4, DC5) as one exportable module."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class GeneralizedRCNN(nn.Module):
    """Normalise -> backbone -> proposal generator -> ROI heads, for one image.

    Args:
        backbone: module returning a dict of named feature maps (ResNet, FPN, ...).
        proposal_generator: RPN: (features, image_hw) -> (proposal boxes, logits).
        roi_heads: StandardROIHeads / Res5ROIHeads / cascade heads:
            (features, proposals, image_hw) -> (boxes, scores, classes[, mask_probs]).
        pixel_mean, pixel_std: per-channel normalisation in the input's colour order.

    forward(images [1, 3, H, W] float32 raw 0-255 pixels, already resized and padded bottom/right
    with the pixel mean; im_info [1, 2] = valid (height, width) of the resized image)
    -> boxes [N, 4] (x1, y1, x2, y2 in resized-image pixels), scores [N], classes [N] int64 (0-based)
    [, mask_probs [N, M, M]]: detectron2's detections before `detector_postprocess`.
    """

    def __init__(self, backbone: nn.Module, proposal_generator: nn.Module, roi_heads: nn.Module, *,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float]):
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"PIXEL_MEAN {pixel_mean} and PIXEL_STD {pixel_std} differ in length")
        # Not in detectron2 checkpoints' required keys: non-persistent, as detectron2 registers them.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Backbone outputs for a padded raw image batch of one."""
        return self.backbone((images - self.pixel_mean) / self.pixel_std)

    def forward(self, images: torch.Tensor, im_info: torch.Tensor):
        image_hw = im_info[0]
        features = self.features(images)
        proposals, _ = self.proposal_generator(features, image_hw)
        return tuple(self.roi_heads(features, proposals, image_hw))
