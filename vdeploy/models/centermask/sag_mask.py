"""CenterMask's spatial-attention-guided mask head (SAG-Mask)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..detectron2.mask_head import MaskRCNNConvUpsampleHead


class SpatialAttention(nn.Module):
    """Gate the features by sigmoid(conv([channel mean, channel max])) (`spatialAtt.conv`, no bias)."""

    def __init__(self, kernel_size: int = 3):
        super().__init__()
        if kernel_size not in (3, 7):
            raise ValueError(f"spatial attention kernel must be 3 or 7, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * self.conv(pooled).sigmoid()


class SpatialAttentionMaskHead(MaskRCNNConvUpsampleHead):
    """`mask_fcn1..N` (3x3 + norm + ReLU) -> spatial attention -> `deconv` (2x2/2 + ReLU) -> `predictor` (1x1).

    Args:
        in_channels: channels of the pooled features; conv_dims: channels of each mask_fcn conv
        (the deconv and predictor keep the last); num_classes: K, or one channel with cls_agnostic.
        conv_norm: norm of the mask_fcn convs ("" = none, then they have biases).

    forward(x [N, C, S, S], classes [N] int64) -> sigmoid probabilities [N, 2S, 2S] of each
    box's predicted class.
    """

    def __init__(self, in_channels: int, *, conv_dims: Sequence[int], conv_dim: int, num_classes: int,
                 cls_agnostic: bool = False, conv_norm: str = ""):
        super().__init__(in_channels, conv_dims=conv_dims, deconv_dim=conv_dim, num_classes=num_classes,
                         cls_agnostic=cls_agnostic, conv_norm=conv_norm)
        self.spatialAtt = SpatialAttention()

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatialAtt(x)
