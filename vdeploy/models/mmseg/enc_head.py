"""MMSegmentation's EncNet head (context encoding) for inference."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .heads import BN, RELU, DecodeHead
from .layers import ConvModule, resize_to


# --------------------------------------------------------------------------- EncNet

class Encoding(nn.Module):
    """mmseg's Encoding layer: soft-assignment of pixels to `num_codes` learned codewords,
    aggregated residuals [n, num_codes, channels]."""

    def __init__(self, channels, num_codes):
        super().__init__()
        self.codewords = nn.Parameter(torch.empty(num_codes, channels).uniform_(-1, 1) / (num_codes * channels) ** 0.5)
        self.scale = nn.Parameter(torch.empty(num_codes).uniform_(-1, 0))

    def forward(self, x):
        n, c = x.shape[0], x.shape[1]
        x = x.reshape(n, c, -1).transpose(1, 2)  # [n, hw, c]
        # ||x - code||^2 = |x|^2 - 2 x.code + |code|^2, without the [n, hw, K, c] tensor
        dist = (x * x).sum(-1, keepdim=True) - 2 * torch.matmul(x, self.codewords.t()) \
            + (self.codewords * self.codewords).sum(-1)[None, None, :]
        weights = (self.scale[None, None, :] * dist).softmax(dim=2)  # [n, hw, K]
        # sum_i w_ik (x_i - c_k) = (w^T x)_k - (sum_i w_ik) c_k
        return torch.bmm(weights.transpose(1, 2), x) - weights.sum(1)[:, :, None] * self.codewords[None]


class EncModule(nn.Module):
    def __init__(self, in_channels, num_codes, norm, act):
        super().__init__()
        self.encoding_project = ConvModule(in_channels, in_channels, 1, norm=norm, act=act)
        enc_norm = dict(norm or {"type": "BN"})
        bn1d = nn.BatchNorm1d(num_codes, eps=enc_norm.get("eps", 1e-5)) if enc_norm["type"] in ("BN", "SyncBN") \
            else None
        if bn1d is None:
            raise ValueError(f"EncHead with norm {enc_norm['type']!r} is not supported")
        self.encoding = nn.Sequential(Encoding(in_channels, num_codes), bn1d, nn.ReLU())
        self.fc = nn.Sequential(nn.Linear(in_channels, in_channels), nn.Sigmoid())

    def forward(self, x):
        feat = self.encoding(self.encoding_project(x)).mean(dim=1)
        gamma = self.fc(feat).reshape(x.shape[0], x.shape[1], 1, 1)
        return F.relu(x + x * gamma)


class EncHead(DecodeHead):
    """EncNet; the SE-loss classifier (`se_layer`) only trains and is kept for the weights."""

    def __init__(self, in_channels: Sequence[int], channels, num_classes, *, num_codes=32, use_se_loss=True,
                 add_lateral=False, in_index=(1, 2, 3), align_corners=False, norm=BN, act=RELU):
        super().__init__(channels, num_classes, tuple(in_index), align_corners, input_transform="multiple_select",
                         norm=norm, act=act)
        self.bottleneck = self.conv(in_channels[-1], channels, 3, 1)
        self.add_lateral = add_lateral
        if add_lateral:
            self.lateral_convs = nn.ModuleList([self.conv(c, channels, 1) for c in in_channels[:-1]])
            self.fusion = self.conv(len(in_channels) * channels, channels, 3, 1)
        self.enc_module = EncModule(channels, num_codes, norm, act)
        self.se_layer: Optional[nn.Linear] = nn.Linear(channels, num_classes) if use_se_loss else None

    def features(self, inputs):
        inputs = self.select(inputs)
        feat = self.bottleneck(inputs[-1])
        if self.add_lateral:
            laterals = [resize_to(conv(inputs[i]), feat, self.align_corners) for i, conv in
                        enumerate(self.lateral_convs)]
            feat = self.fusion(torch.cat([feat, *laterals], 1))
        return self.enc_module(feat)
