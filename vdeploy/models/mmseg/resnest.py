"""MMSegmentation's ResNeSt backbone (split-attention networks) for inference.

ResNeSt is a ResNetV1d (deep stem, average-pool shortcut) whose bottleneck 3x3 conv is a
split-attention conv: `radix` grouped convs whose outputs are weighted per channel by a softmax
over the radix computed from their pooled sum. With `avg_down_stride` the block strides by a
3x3 average pool after that conv instead of in it. Module names follow mmseg's (`conv2.conv`,
`conv2.bn0`, `conv2.fc1`, `avd_layer`, ...) so that its checkpoints load unchanged.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .resnet import ResNet, batch_norm


class SplitAttentionConv2d(nn.Module):
    def __init__(self, cin, channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, radix=2,
                 reduction_factor=4):
        super().__init__()
        inter = max(cin * radix // reduction_factor, 32)
        self.radix, self.groups, self.channels = radix, groups, channels
        self.conv = nn.Conv2d(cin, channels * radix, kernel_size, stride, padding, dilation, groups * radix,
                              bias=False)
        self.bn0 = batch_norm(channels * radix)
        self.relu = nn.ReLU()
        self.fc1 = nn.Conv2d(channels, inter, 1, groups=groups)
        self.bn1 = batch_norm(inter)
        self.fc2 = nn.Conv2d(inter, channels * radix, 1, groups=groups)

    def radix_softmax(self, logits):
        """[N, radix * C, 1, 1] -> weights [N, radix, C, 1, 1]: softmax over the radix within each
        cardinal group (the fc2 channels are ordered group, radix, channel), sigmoid for radix 1."""
        n = logits.shape[0]
        if self.radix == 1:
            return torch.sigmoid(logits).reshape(n, 1, self.channels, 1, 1)
        w = logits.reshape(n, self.groups, self.radix, -1).transpose(1, 2).softmax(dim=1)
        return w.reshape(n, self.radix, self.channels, 1, 1)

    def forward(self, x):
        x = self.relu(self.bn0(self.conv(x)))
        n, _, h, w = x.shape
        splits = x.reshape(n, self.radix, self.channels, h, w)
        gap = splits.sum(dim=1).mean(dim=(2, 3), keepdim=True)
        gap = self.relu(self.bn1(self.fc1(gap)))
        return (self.radix_softmax(self.fc2(gap)) * splits).sum(dim=1)


class SplitBottleneck(nn.Module):
    """ResNeSt's bottleneck (expansion 4): 1x1, split-attention 3x3, [3x3 average pool], 1x1."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None, style="pytorch", *, groups=1,
                 base_width=4, base_channels=64, radix=2, reduction_factor=4, avg_down_stride=True):
        super().__init__()
        s1, s2 = (1, stride) if style == "pytorch" else (stride, 1)
        width = planes if groups == 1 else math.floor(planes * base_width / base_channels) * groups
        self.avg_down_stride = avg_down_stride and s2 > 1
        self.conv1 = nn.Conv2d(inplanes, width, 1, s1, bias=False)
        self.bn1 = batch_norm(width)
        self.conv2 = SplitAttentionConv2d(width, width, 3, 1 if self.avg_down_stride else s2, dilation, dilation,
                                          groups, radix, reduction_factor)
        if self.avg_down_stride:
            self.avd_layer = nn.AvgPool2d(3, s2, padding=1)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = batch_norm(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.conv2(self.relu(self.bn1(self.conv1(x))))
        if self.avg_down_stride:
            out = self.avd_layer(out)
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class _SplitBlocks:
    """A block factory with ResNet's block call and the split-attention settings bound."""

    expansion = SplitBottleneck.expansion

    def __init__(self, **settings):
        self.settings = settings

    def __call__(self, inplanes, planes, stride, dilation, downsample, style):
        return SplitBottleneck(inplanes, planes, stride, dilation, downsample, style, **self.settings)


class ResNeSt(ResNet):
    def __init__(self, depth: int = 50, *, groups=1, base_width=4, radix=2, reduction_factor=4,
                 avg_down_stride=True, base_channels=64, deep_stem=True, avg_down=True, **resnet_kwargs):
        if depth < 50:
            raise ValueError("ResNeSt needs a bottleneck depth (50, 101 or 152)")
        blocks = _SplitBlocks(groups=groups, base_width=base_width, base_channels=base_channels, radix=radix,
                              reduction_factor=reduction_factor, avg_down_stride=avg_down_stride)
        super().__init__(depth, base_channels=base_channels, deep_stem=deep_stem, avg_down=avg_down, block=blocks,
                         **resnet_kwargs)
