"""ResNeSt as fast-reid builds it (`build_resnest_backbone`): split-attention bottlenecks.

fast-reid fixes radix 2, one group, bottleneck width 64, a deep stem (three 3x3 convs), average
pooling before the downsampling 1x1 convs ("avg_down") and average pooling after the split
attention when a block strides ("avd"). With `last_stride=1` stage 4 keeps stride 16 and dilates
its 3x3 convs by 2, except the stage's first block (dilation 1, as ResNeSt's `_make_layer`).
WITH_IBN / WITH_SE / WITH_NL do not apply: fast-reid's ResNeSt ignores them.

Parameter names follow fast-reid's so that its checkpoints load without renaming.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import make_norm

BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 200: (3, 24, 36, 3), 269: (3, 30, 48, 8)}
STEM_WIDTH = {50: 32, 101: 64, 200: 64, 269: 64}


class SplAtConv2d(nn.Module):
    """Split attention over `radix` groups of a grouped 3x3 conv (one cardinal group)."""

    def __init__(self, channels: int, stride: int, dilation: int, norm: str, radix: int = 2,
                 reduction_factor: int = 4):
        super().__init__()
        inter = max(channels * radix // reduction_factor, 32)
        self.radix = radix
        self.conv = nn.Conv2d(channels, channels * radix, 3, stride, dilation, dilation, groups=radix, bias=False)
        self.bn0 = make_norm(norm, channels * radix)
        self.relu = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(channels, inter, 1)
        self.bn1 = make_norm(norm, inter)
        self.fc2 = nn.Conv2d(inter, channels * radix, 1)

    def forward(self, x):
        x = self.relu(self.bn0(self.conv(x)))
        n, c = x.shape[0], x.shape[1] // self.radix
        splits = torch.split(x, c, dim=1)
        gap = splits[0]
        for s in splits[1:]:
            gap = gap + s
        gap = gap.mean(dim=(2, 3), keepdim=True)
        atten = self.fc2(self.relu(self.bn1(self.fc1(gap))))
        # rSoftMax: softmax across the radix splits of each channel.
        atten = atten.reshape(n, self.radix, c).softmax(dim=1).reshape(n, self.radix * c, 1, 1)
        attens = torch.split(atten, c, dim=1)
        out = attens[0] * splits[0]
        for a, s in zip(attens[1:], splits[1:]):
            out = out + a * s
        return out


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, norm, stride=1, dilation=1, downsample=None, avd=False):
        super().__init__()
        width = planes  # bottleneck_width 64, cardinality 1
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = make_norm(norm, width)
        self.avd_layer = nn.AvgPool2d(3, stride, padding=1) if avd else None
        self.conv2 = SplAtConv2d(width, 1 if avd else stride, dilation, norm)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = make_norm(norm, planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.conv2(self.relu(self.bn1(self.conv1(x))))
        if self.avd_layer is not None:
            out = self.avd_layer(out)
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNeSt(nn.Module):
    """Output: the last stage's feature map (stride 32, or 16 with `last_stride=1`)."""

    def __init__(self, depth: int = 50, last_stride: int = 1, norm: str = "BN"):
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"unsupported ResNeSt depth {depth}; expected one of {sorted(BLOCKS_PER_STAGE)}")
        stem = STEM_WIDTH[depth]
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, stem, 3, 2, 1, bias=False), make_norm(norm, stem), nn.ReLU(inplace=True),
            nn.Conv2d(stem, stem, 3, 1, 1, bias=False), make_norm(norm, stem), nn.ReLU(inplace=True),
            nn.Conv2d(stem, stem * 2, 3, 1, 1, bias=False))
        self.bn1 = make_norm(norm, stem * 2)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.inplanes = stem * 2
        blocks = BLOCKS_PER_STAGE[depth]
        # fast-reid: last_stride 1 -> stage 4 at stride 1 with dilation 2; otherwise plain strides.
        dilated = last_stride == 1
        self.layer1 = self._make_stage(64, blocks[0], 1, 1, norm, is_first=False)
        self.layer2 = self._make_stage(128, blocks[1], 2, 1, norm)
        self.layer3 = self._make_stage(256, blocks[2], 2, 1, norm)
        self.layer4 = self._make_stage(512, blocks[3], 1 if dilated else 2, 2 if dilated else 1, norm)

    def _make_stage(self, planes, n, stride, dilation, norm, is_first=True):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            # avg_down; ceil_mode and count_include_pad=False as ResNeSt (no padding, so exact).
            pool = stride if dilation == 1 else 1
            downsample = nn.Sequential(
                nn.AvgPool2d(pool, pool, ceil_mode=True, count_include_pad=False),
                nn.Conv2d(self.inplanes, planes * 4, 1, bias=False), make_norm(norm, planes * 4))
        layers = [Bottleneck(self.inplanes, planes, norm, stride, 1, downsample, avd=stride > 1 or is_first)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes, norm, dilation=dilation) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
