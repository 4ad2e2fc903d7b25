"""MMSegmentation's CGNet (context guided network) backbone for inference.

Three 3x3 stem convs, then two levels of context-guided blocks: local (3x3 depthwise) and
surrounding (dilated 3x3 depthwise) features concatenated, normalised, PReLU, then re-weighted
by a squeeze-excitation global context; the down-sampled image is injected at each level.
Names follow mmseg's so that checkpoints load.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .layers import BN, ConvModule, norm_layer


def prelu(channels: int) -> dict:
    return {"type": "PReLU", "num_parameters": channels}


class GlobalContextExtractor(nn.Module):
    def __init__(self, channels, reduction=16):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction), nn.ReLU(),
                                nn.Linear(channels // reduction, channels), nn.Sigmoid())

    def forward(self, x):
        w = self.fc(x.mean(dim=(2, 3)))
        return x * w[:, :, None, None]


class ContextGuidedBlock(nn.Module):
    def __init__(self, cin, cout, dilation=2, reduction=16, skip_connect=True, downsample=False, *, norm=BN):
        super().__init__()
        self.downsample = downsample
        channels = cout if downsample else cout // 2
        k, s = (3, 2) if downsample else (1, 1)
        self.conv1x1 = ConvModule(cin, channels, k, s, (k - 1) // 2, norm=norm, act=prelu(channels))
        self.f_loc = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.f_sur = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, groups=channels, bias=False)
        self.bn = norm_layer(norm, 2 * channels)
        self.activate = nn.PReLU(2 * channels)
        if downsample:
            self.bottleneck = nn.Conv2d(2 * channels, cout, 1, bias=False)
        self.skip_connect = skip_connect and not downsample
        self.f_glo = GlobalContextExtractor(cout, reduction)

    def forward(self, x):
        out = self.conv1x1(x)
        joint = self.activate(self.bn(torch.cat([self.f_loc(out), self.f_sur(out)], dim=1)))
        if self.downsample:
            joint = self.bottleneck(joint)
        out = self.f_glo(joint)
        return x + out if self.skip_connect else out


class InputInjection(nn.Module):
    def __init__(self, num_downsampling):
        super().__init__()
        self.pool = nn.ModuleList([nn.AvgPool2d(3, 2, 1) for _ in range(num_downsampling)])

    def forward(self, x):
        for pool in self.pool:
            x = pool(x)
        return x


class CGNet(nn.Module):
    """Outputs the three levels (strides 2, 4, 8)."""

    def __init__(self, *, in_channels=3, num_channels: Sequence[int] = (32, 64, 128), num_blocks=(3, 21),
                 dilations=(2, 4), reductions=(8, 16), norm=BN):
        super().__init__()
        c0, c1, c2 = num_channels
        self.stem = nn.ModuleList([ConvModule(in_channels if i == 0 else c0, c0, 3, 2 if i == 0 else 1, 1, norm=norm,
                                              act=prelu(c0)) for i in range(3)])
        self.inject_2x = InputInjection(1)
        self.inject_4x = InputInjection(2)

        def norm_prelu(c):
            return nn.Sequential(norm_layer(norm, c), nn.PReLU(c))

        self.norm_prelu_0 = norm_prelu(c0 + in_channels)
        self.level1 = nn.ModuleList([ContextGuidedBlock(c0 + in_channels if i == 0 else c1, c1, dilations[0],
                                                        reductions[0], downsample=i == 0, norm=norm)
                                     for i in range(num_blocks[0])])
        self.norm_prelu_1 = norm_prelu(2 * c1 + in_channels)
        self.level2 = nn.ModuleList([ContextGuidedBlock(2 * c1 + in_channels if i == 0 else c2, c2, dilations[1],
                                                        reductions[1], downsample=i == 0, norm=norm)
                                     for i in range(num_blocks[1])])
        self.norm_prelu_2 = norm_prelu(2 * c2)

    def forward(self, x):
        inp_2x, inp_4x = self.inject_2x(x), self.inject_4x(x)
        for layer in self.stem:
            x = layer(x)
        x = self.norm_prelu_0(torch.cat([x, inp_2x], dim=1))
        outs = [x]
        for i, block in enumerate(self.level1):
            x = block(x)
            if i == 0:
                down1 = x
        x = self.norm_prelu_1(torch.cat([x, down1, inp_4x], dim=1))
        outs.append(x)
        for i, block in enumerate(self.level2):
            x = block(x)
            if i == 0:
                down2 = x
        outs.append(self.norm_prelu_2(torch.cat([down2, x], dim=1)))
        return tuple(outs)
