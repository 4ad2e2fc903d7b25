"""ConvNeXt (mmpretrain's `ConvNeXt`, used by mmseg as `mmpretrain.ConvNeXt`) for inference.

A 4x4 stride-4 stem and three 2x2 stride-2 downsamplings, each with a channel LayerNorm
(mmpretrain's LN2d); blocks of 7x7 depthwise conv, LayerNorm, pointwise MLP (Linear layers on
channels-last tokens, or 1x1 convs), optional global response normalisation, a per-channel
scale `gamma` and the residual. Each output stage gets its own LayerNorm (`norm{i}`).
Names follow mmpretrain (`downsample_layers.i`, `stages.i.j`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import GELU, activation


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (or of NHWC tokens with channels_last)."""

    def forward(self, x, channels_last: bool = False):
        if channels_last:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GRN(nn.Module):
    """Global response normalisation (ConvNeXt V2): x * (1 + gamma * N(x)) + beta."""

    def __init__(self, channels, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x, channels_last: bool):
        dims = (1, 2) if channels_last else (2, 3)
        cdim = -1 if channels_last else 1
        gx = torch.norm(x, p=2, dim=dims, keepdim=True)
        nx = gx / (gx.mean(dim=cdim, keepdim=True) + self.eps)
        shape = (1, 1, 1, -1) if channels_last else (1, -1, 1, 1)
        return self.gamma.view(shape) * (x * nx) + self.beta.view(shape) + x


class ConvNeXtBlock(nn.Module):
    def __init__(self, channels, ln_eps=1e-6, act: dict = GELU, mlp_ratio=4.0, linear_pw_conv=True,
                 layer_scale_init_value=1e-6, use_grn=False):
        super().__init__()
        self.depthwise_conv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.linear_pw_conv = linear_pw_conv
        self.norm = LayerNorm2d(channels, eps=ln_eps)
        mid = int(mlp_ratio * channels)
        self.pointwise_conv1 = nn.Linear(channels, mid) if linear_pw_conv else nn.Conv2d(channels, mid, 1)
        self.act = activation(act)
        self.grn = GRN(mid) if use_grn else None
        self.pointwise_conv2 = nn.Linear(mid, channels) if linear_pw_conv else nn.Conv2d(mid, channels, 1)
        self.gamma = nn.Parameter(torch.full((channels,), float(layer_scale_init_value))) \
            if layer_scale_init_value > 0 else None

    def forward(self, x):
        shortcut = x
        x = self.depthwise_conv(x)
        last = self.linear_pw_conv
        if last:
            x = x.permute(0, 2, 3, 1)
        x = self.act(self.pointwise_conv1(self.norm(x, channels_last=last)))
        if self.grn is not None:
            x = self.grn(x, channels_last=last)
        x = self.pointwise_conv2(x)
        if last:
            x = x.permute(0, 3, 1, 2)
        if self.gamma is not None:
            x = x * self.gamma.view(1, -1, 1, 1)
        return shortcut + x


class ConvNeXt(nn.Module):
    def __init__(self, depths: Sequence[int] = (3, 3, 9, 3), channels: Sequence[int] = (96, 192, 384, 768),
                 in_channels=3, stem_patch_size=4, ln_eps=1e-6, act: dict = GELU, linear_pw_conv=True,
                 use_grn=False, layer_scale_init_value=1e-6, out_indices: Sequence[int] = (3,)):
        super().__init__()
        if len(depths) != len(channels):
            raise ValueError("ConvNeXt: depths and channels need the same length")
        self.out_indices = tuple(out_indices)
        # stem (conv, LN2d), then downsamplings (LN2d, conv)
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(in_channels, channels[0], stem_patch_size, stem_patch_size), LayerNorm2d(channels[0], ln_eps))])
        self.stages = nn.ModuleList()
        for i, (depth, c) in enumerate(zip(depths, channels)):
            if i >= 1:
                self.downsample_layers.append(nn.Sequential(LayerNorm2d(channels[i - 1], ln_eps),
                                                          nn.Conv2d(channels[i - 1], c, 2, 2)))
            self.stages.append(nn.Sequential(*[ConvNeXtBlock(c, ln_eps, act, 4.0, linear_pw_conv,
                                                             layer_scale_init_value, use_grn) for _ in range(depth)]))
            if i in self.out_indices:
                self.add_module(f"norm{i}", LayerNorm2d(c, ln_eps))

    def forward(self, x):
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(self.downsample_layers[i](x))
            if i in self.out_indices:
                outs.append(getattr(self, f"norm{i}")(x))
        return tuple(outs)
