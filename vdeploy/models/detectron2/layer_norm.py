"""detectron2's channels-first LayerNorm (`get_norm("LN")`): normalises over C of [N, C, H, W].

Used by ViTDet's simple feature pyramid, the MViTv2/Swin FPNs and the "LN" box and mask heads.
"""
from __future__ import annotations

import torch
from torch import nn


class LayerNorm2d(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # written out as detectron2 does (not F.layer_norm on a permute) so float32 results match
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]
