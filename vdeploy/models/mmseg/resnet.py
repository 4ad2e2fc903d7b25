"""MMSegmentation's ResNet family (ResNet, ResNetV1c, ResNetV1d) for inference.

V1c replaces the 7x7 stem with three 3x3 convs ("deep stem"); V1d also down-samples the
shortcut with an average pool. Dilated variants (D8: strides (1, 2, 1, 1), dilations
(1, 1, 2, 4)) use `contract_dilation`: the first block of a dilated stage uses half the
dilation. Module names follow mmseg's so that its checkpoints load unchanged.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
                    152: (3, 8, 36, 3)}


def batch_norm(channels: int, eps: float = 1e-5) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None, style="pytorch"):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn1 = batch_norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = batch_norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None, style="pytorch"):
        super().__init__()
        # "pytorch" style strides in the 3x3 conv, "caffe" style in the first 1x1.
        s1, s2 = (1, stride) if style == "pytorch" else (stride, 1)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, s1, bias=False)
        self.bn1 = batch_norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, s2, dilation, dilation, bias=False)
        self.bn2 = batch_norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = batch_norm(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Returns the feature maps of the stages listed in `out_indices`, as a tuple."""

    def __init__(self, depth: int = 50, *, stem_channels: int = 64, base_channels: int = 64,
                 strides: Sequence[int] = (1, 2, 2, 2), dilations: Sequence[int] = (1, 1, 1, 1),
                 out_indices: Sequence[int] = (0, 1, 2, 3), deep_stem: bool = False, avg_down: bool = False,
                 contract_dilation: bool = False, style: str = "pytorch",
                 multi_grid: Sequence[int] | None = None, block=None):
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"unsupported ResNet depth {depth}; expected one of {sorted(BLOCKS_PER_STAGE)}")
        if len(strides) != 4 or len(dilations) != 4:
            raise ValueError("strides and dilations must have 4 entries (4 stages)")
        # `block`: another bottleneck with the same call (ResNeSt's split-attention one)
        block = block or (BasicBlock if depth < 50 else Bottleneck)
        self.out_indices = tuple(out_indices)
        self.deep_stem = deep_stem
        if deep_stem:
            half = stem_channels // 2
            self.stem = nn.Sequential(
                nn.Conv2d(3, half, 3, 2, 1, bias=False), batch_norm(half), nn.ReLU(inplace=True),
                nn.Conv2d(half, half, 3, 1, 1, bias=False), batch_norm(half), nn.ReLU(inplace=True),
                nn.Conv2d(half, stem_channels, 3, 1, 1, bias=False), batch_norm(stem_channels),
                nn.ReLU(inplace=True))
        else:
            self.conv1 = nn.Conv2d(3, stem_channels, 7, 2, 3, bias=False)
            self.bn1 = batch_norm(stem_channels)
            self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = stem_channels
        self.stage_names = []
        for i, (n, stride, dilation) in enumerate(zip(BLOCKS_PER_STAGE[depth], strides, dilations)):
            planes = base_channels * 2 ** i
            first_dilation = dilation // 2 if contract_dilation and dilation > 1 else dilation
            # mmseg: `multi_grid` replaces the dilations of the last stage's blocks outright
            grid = tuple(multi_grid) if multi_grid and i == 3 else None
            if grid is not None:
                if len(grid) != n:
                    raise ValueError(f"multi_grid needs one entry per block of the last stage ({n})")
                first_dilation = grid[0]
            downsample = None
            if stride != 1 or inplanes != planes * block.expansion:
                down: list[nn.Module] = []
                conv_stride = stride
                if avg_down:  # mmseg adds the pool even at stride 1 (a 1x1 one), which shifts the conv to `.1`
                    down.append(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
                                if stride != 1 else nn.Identity())
                    conv_stride = 1
                down += [nn.Conv2d(inplanes, planes * block.expansion, 1, conv_stride, bias=False),
                         batch_norm(planes * block.expansion)]
                downsample = nn.Sequential(*down)
            blocks = [block(inplanes, planes, stride, first_dilation, downsample, style)]
            inplanes = planes * block.expansion
            blocks += [block(inplanes, planes, 1, grid[j] if grid else dilation, None, style) for j in range(1, n)]
            name = f"layer{i + 1}"
            setattr(self, name, nn.Sequential(*blocks))
            self.stage_names.append(name)

    def forward(self, x):
        x = self.stem(x) if self.deep_stem else self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        outs = []
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
