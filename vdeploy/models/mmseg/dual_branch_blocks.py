"""Building blocks of mmseg's two/three-branch real-time nets (DDRNet, PIDNet): residual blocks
of ConvModules with an optional output activation, convs in pre-activation order
(norm -> act -> conv, mmcv's `order=('norm', 'act', 'conv')`) and the deep aggregation pyramid
pooling modules DAPPM / PAPPM. Names follow mmseg's `models/utils` so that checkpoints load.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import BN, RELU, ConvModule, activation, norm_layer, norm_name


class PreActConv(nn.Module):
    """mmcv's ConvModule with order (norm, act, conv): the norm sees the input channels; the conv
    has no bias (mmcv's bias='auto' with a norm)."""

    def __init__(self, cin, cout, kernel_size, padding=0, groups=1, *, norm: dict = BN, act: Optional[dict] = RELU):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, 1, padding, groups=groups, bias=False)
        self.norm_attr = norm_name(norm)
        self.add_module(self.norm_attr, norm_layer(norm, cin))
        self.activate = activation(act) if act is not None else None

    def forward(self, x):
        x = getattr(self, self.norm_attr)(x)
        if self.activate is not None:
            x = self.activate(x)
        return self.conv(x)


class BasicBlock(nn.Module):
    """Two 3x3 ConvModules plus the shortcut; `act_out` (ReLU by default) after the sum."""

    expansion = 1

    def __init__(self, cin, channels, stride=1, downsample=None, *, norm=BN, act=RELU, act_out: Optional[dict] = RELU):
        super().__init__()
        self.conv1 = ConvModule(cin, channels, 3, stride, 1, norm=norm, act=act)
        self.conv2 = ConvModule(channels, channels, 3, 1, 1, norm=norm, act=None)
        self.downsample = downsample
        self.act = activation(act_out) if act_out else None

    def forward(self, x):
        out = self.conv2(self.conv1(x)) + (x if self.downsample is None else self.downsample(x))
        return out if self.act is None else self.act(out)


class Bottleneck(nn.Module):
    """1x1, 3x3 (strided), 1x1 to 2x channels plus the shortcut; no output activation by default."""

    expansion = 2

    def __init__(self, cin, channels, stride=1, downsample=None, *, norm=BN, act=RELU, act_out: Optional[dict] = None):
        super().__init__()
        self.conv1 = ConvModule(cin, channels, 1, norm=norm, act=act)
        self.conv2 = ConvModule(channels, channels, 3, stride, 1, norm=norm, act=act)
        self.conv3 = ConvModule(channels, channels * 2, 1, norm=norm, act=None)
        self.act = activation(act_out) if act_out else None
        self.downsample = downsample

    def forward(self, x):
        out = self.conv3(self.conv2(self.conv1(x))) + (x if self.downsample is None else self.downsample(x))
        return out if self.act is None else self.act(out)


def res_layer(block, cin, channels, num_blocks, stride=1, *, norm=BN, act=RELU, downsample_kind="conv_module"):
    """mmseg's DDRNet/PIDNet `_make_layer`: the first block with the shortcut projection and its
    default output activation, the others with `act` except the last, which has none. The
    projection is a ConvModule (PIDNet) or Sequential(Conv2d, BN) (DDRNet, `downsample_kind='plain'`)."""
    downsample = None
    cout = channels * block.expansion
    if stride != 1 or cin != cout:
        if downsample_kind == "plain":
            downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm_layer(norm, cout))
        else:
            downsample = ConvModule(cin, cout, 1, stride, norm=norm, act=None)
    layers = [block(cin, channels, stride, downsample, norm=norm, act=act)]
    for i in range(1, num_blocks):
        layers.append(block(cout, channels, 1, norm=norm, act=act, act_out=None if i == num_blocks - 1 else act))
    return nn.Sequential(*layers)


def single_block(block, cin, channels, *, norm=BN, act=RELU):
    """mmseg's PIDNet `_make_single_layer`: one block, projected shortcut, no output activation."""
    cout = channels * block.expansion
    downsample = ConvModule(cin, cout, 1, norm=norm, act=None) if cin != cout else None
    return block(cin, channels, 1, downsample, norm=norm, act=act, act_out=None)


def _up(x, like):
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)


class DAPPM(nn.Module):
    """Deep aggregation pyramid pooling: a 1x1 branch, average pools (5/2, 9/4, 17/8) and global
    pooling, each added to the previous scale and refined by a 3x3 conv (pre-activation convs
    throughout), compressed and added to a 1x1 shortcut."""

    def __init__(self, cin, branch_channels, cout, num_scales=5, kernel_sizes: Sequence[int] = (5, 9, 17),
                 strides: Sequence[int] = (2, 4, 8), paddings: Sequence[int] = (2, 4, 8), *, norm=BN, act=RELU):
        super().__init__()
        self.num_scales = num_scales

        def pre(i, o, k=1, p=0, g=1):
            return PreActConv(i, o, k, p, g, norm=norm, act=act)

        scales: list[nn.Module] = [pre(cin, branch_channels)]
        for i in range(1, num_scales - 1):
            scales.append(nn.Sequential(nn.AvgPool2d(kernel_sizes[i - 1], strides[i - 1], paddings[i - 1]),
                                        pre(cin, branch_channels)))
        scales.append(nn.Sequential(_GlobalPool(), pre(cin, branch_channels)))
        self.scales = nn.ModuleList(scales)
        self.processes = self.make_processes(branch_channels, pre)
        self.compression = pre(branch_channels * num_scales, cout)
        self.shortcut = pre(cin, cout)

    def make_processes(self, branch_channels, pre):
        return nn.ModuleList([pre(branch_channels, branch_channels, 3, 1) for _ in range(self.num_scales - 1)])

    def forward(self, x):
        feats = [self.scales[0](x)]
        for i in range(1, self.num_scales):
            feats.append(self.processes[i - 1](_up(self.scales[i](x), x) + feats[i - 1]))
        return self.compression(torch.cat(feats, dim=1)) + self.shortcut(x)


class PAPPM(DAPPM):
    """PIDNet's parallel DAPPM: every pooled scale adds the 1x1 branch, one grouped 3x3 conv."""

    def make_processes(self, branch_channels, pre):
        n = self.num_scales - 1
        return pre(branch_channels * n, branch_channels * n, 3, 1, n)

    def forward(self, x):
        base = self.scales[0](x)
        feats = [_up(self.scales[i](x), x) + base for i in range(1, self.num_scales)]
        return self.compression(torch.cat([base, self.processes(torch.cat(feats, dim=1))], dim=1)) + self.shortcut(x)


class _GlobalPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True)
