"""MMSegmentation's BiSeNetV2 backbone for inference: a wide, shallow detail branch (1/8), a
narrow, deep semantic branch (stem, gather-and-expand layers, context embedding; 1/32) and the
bilateral guided aggregation (BGA) that fuses them. Returns the BGA output then the semantic
stages (for the auxiliary heads), picked by `out_indices`.

mmseg builds the branches and the BGA layer with their own defaults (BN, ReLU): the backbone's
norm_cfg/act_cfg never reach them, so there is no norm/act argument here either. Module names
follow mmseg's so that its checkpoints load unchanged.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .layers import BN, RELU, AdaptiveAvgPool, ConvModule, DepthwiseSeparableConvModule, norm_layer, resize


def _conv(cin, cout, k=3, stride=1, groups=1, act=True):
    """A BN ConvModule with "same" padding, ReLU unless `act` is False."""
    return ConvModule(cin, cout, k, stride, k // 2, groups=groups, act=RELU if act else None)


class DetailBranch(nn.Module):
    def __init__(self, channels: Sequence[int] = (64, 64, 128), in_channels=3):
        super().__init__()
        stages = []
        for i, c in enumerate(channels):
            cin = in_channels if i == 0 else channels[i - 1]
            convs = [_conv(cin, c, 3, 2), _conv(c, c)] + ([_conv(c, c)] if i else [])
            stages.append(nn.Sequential(*convs))
        self.detail_branch = nn.ModuleList(stages)

    def forward(self, x):
        for stage in self.detail_branch:
            x = stage(x)
        return x


class StemBlock(nn.Module):
    def __init__(self, in_channels=3, out_channels=16):
        super().__init__()
        self.conv_first = _conv(in_channels, out_channels, 3, 2)
        self.convs = nn.Sequential(_conv(out_channels, out_channels // 2, 1), _conv(out_channels // 2, out_channels,
                                                                                    3, 2))
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.fuse_last = _conv(out_channels * 2, out_channels)

    def forward(self, x):
        x = self.conv_first(x)
        return self.fuse_last(torch.cat([self.convs(x), self.pool(x)], dim=1))


class GELayer(nn.Module):
    """Gather-and-expand: 3x3 conv, depthwise expansion (two depthwise convs when strided),
    1x1 projection, plus the identity (or a separable strided shortcut), ReLU."""

    def __init__(self, cin, cout, exp_ratio=6, stride=1):
        super().__init__()
        mid = cin * exp_ratio
        self.conv1 = _conv(cin, cin)
        if stride == 1:
            self.dwconv = nn.Sequential(_conv(cin, mid, 3, 1, groups=cin))
            self.shortcut = None
        else:
            self.dwconv = nn.Sequential(_conv(cin, mid, 3, stride, groups=cin, act=False),
                                        _conv(mid, mid, 3, 1, groups=mid))
            self.shortcut = nn.Sequential(DepthwiseSeparableConvModule(cin, cout, 3, stride, 1, act=None))
        self.conv2 = nn.Sequential(_conv(mid, cout, 1, act=False))
        self.act = nn.ReLU()

    def forward(self, x):
        out = self.conv2(self.dwconv(self.conv1(x)))
        return self.act(out + (x if self.shortcut is None else self.shortcut(x)))


class CEBlock(nn.Module):
    """Context embedding: global average (BatchNorm'd), 1x1 conv, added back, 3x3 conv."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.gap = nn.Sequential(AdaptiveAvgPool(1), norm_layer(BN, in_channels))
        self.conv_gap = _conv(in_channels, out_channels, 1)
        self.conv_last = _conv(out_channels, out_channels)

    def forward(self, x):
        return self.conv_last(x + self.conv_gap(self.gap(x)))


class SemanticBranch(nn.Module):
    def __init__(self, channels: Sequence[int] = (16, 32, 64, 128), in_channels=3, exp_ratio=6):
        super().__init__()
        self.stage_names = []
        for i, c in enumerate(channels):
            name = f"stage{i + 1}"
            if i == 0:
                stage = StemBlock(in_channels, c)
            else:
                repeats = 3 if i == len(channels) - 1 else 1
                stage = nn.Sequential(GELayer(channels[i - 1], c, exp_ratio, 2),
                                      *[GELayer(c, c, exp_ratio, 1) for _ in range(repeats)])
            self.add_module(name, stage)
            self.stage_names.append(name)
        name = f"stage{len(channels)}_CEBlock"
        self.add_module(name, CEBlock(channels[-1], channels[-1]))
        self.stage_names.append(name)

    def forward(self, x):
        outs = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outs.append(x)
        return outs


class BGALayer(nn.Module):
    def __init__(self, channels=128, align_corners=False):
        super().__init__()
        self.align_corners = align_corners
        self.detail_dwconv = nn.Sequential(DepthwiseSeparableConvModule(channels, channels, 3, 1, 1, act=None,
                                                                        pw_norm=None))
        self.detail_down = nn.Sequential(_conv(channels, channels, 3, 2, act=False), nn.AvgPool2d(3, 2, 1))
        self.semantic_conv = nn.Sequential(_conv(channels, channels, act=False))
        self.semantic_dwconv = nn.Sequential(DepthwiseSeparableConvModule(channels, channels, 3, 1, 1, act=None,
                                                                          pw_norm=None))
        self.conv = _conv(channels, channels)

    def forward(self, x_d, x_s):
        detail = self.detail_dwconv(x_d)
        detail_down = self.detail_down(x_d)
        semantic = resize(self.semantic_conv(x_s), detail.shape[2:], self.align_corners)
        fuse_1 = detail * torch.sigmoid(semantic)
        fuse_2 = resize(detail_down * torch.sigmoid(self.semantic_dwconv(x_s)), fuse_1.shape[2:], self.align_corners)
        return self.conv(fuse_1 + fuse_2)


class BiSeNetV2(nn.Module):
    def __init__(self, *, in_channels=3, detail_channels: Sequence[int] = (64, 64, 128),
                 semantic_channels: Sequence[int] = (16, 32, 64, 128), semantic_expansion_ratio=6,
                 bga_channels=128, out_indices: Sequence[int] = (0, 1, 2, 3, 4), align_corners=False):
        super().__init__()
        self.out_indices = tuple(out_indices)
        self.detail = DetailBranch(detail_channels, in_channels)
        self.semantic = SemanticBranch(semantic_channels, in_channels, semantic_expansion_ratio)
        self.bga = BGALayer(bga_channels, align_corners)

    def forward(self, x):
        semantic = self.semantic(x)
        outs = [self.bga(self.detail(x), semantic[-1])] + semantic[:-1]
        return tuple(outs[i] for i in self.out_indices)
