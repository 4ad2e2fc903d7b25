"""The extra pyramid level FCOS adds with TOP_LEVELS = 1 (P6P7 for 2 is detectron2's LastLevelP6P7)."""
from __future__ import annotations

import torch
from torch import nn


class LastLevelP6(nn.Module):
    """P6 = 3x3/2 conv of `in_feature` (usually "p5")."""

    num_levels = 1

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "p5"):
        super().__init__()
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.p6(x)]
