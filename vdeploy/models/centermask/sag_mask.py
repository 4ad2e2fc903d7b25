"""CenterMask's spatial-attention-guided mask head (SAG-Mask)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..detectron2.resnet import Conv2d, make_norm


def select_class(per_class: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """per_class[i, classes[i]] for every row i (one entry per box: its predicted class)."""
    rows = torch.ones_like(classes).cumsum(0) - 1  # arange(N) without reading a shape
    return per_class[rows, classes]


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


class SpatialAttentionMaskHead(nn.Module):
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
        super().__init__()
        self._convs = []
        channels = in_channels
        for k, dim in enumerate(conv_dims, start=1):
            conv = Conv2d(channels, dim, 3, padding=1, bias=conv_norm == "", norm=make_norm(conv_norm, dim),
                          activation=True)
            self.add_module(f"mask_fcn{k}", conv)
            self._convs.append(conv)
            channels = dim
        self.spatialAtt = SpatialAttention()
        self.deconv = nn.ConvTranspose2d(channels, conv_dim, kernel_size=2, stride=2)
        self.cls_agnostic = cls_agnostic
        self.predictor = nn.Conv2d(conv_dim, 1 if cls_agnostic else num_classes, 1)

    def forward(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        for conv in self._convs:
            x = conv(x)
        logits = self.predictor(F.relu(self.deconv(self.spatialAtt(x))))
        if self.cls_agnostic:
            return logits[:, 0].sigmoid()
        return select_class(logits, classes).sigmoid()
