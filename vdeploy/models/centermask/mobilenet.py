"""centermask2's MobileNetV2 backbone (CenterMask-Lite `build_fcos_mobilenetv2_fpn_backbone`).

The standard MobileNetV2 (width 1.0, inverted residuals with ReLU6), always with frozen batch norm
whatever MODEL.*.NORM says, as centermask2 hard-codes it. Outputs res2..res5 are the features after
blocks 3, 6, 13 and 17 (strides 4, 8, 16, 32; 24, 32, 96 and 320 channels). Module names follow
centermask2's (`features.N.conv.M`) so its checkpoints load unchanged.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..detectron2.registry import ShapeSpec
from ..detectron2.resnet import FrozenBatchNorm2d

# (expansion t, channels c, repeats n, first stride s), as torchvision / centermask2
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
RETURN_INDICES = {3: "res2", 6: "res3", 13: "res4", 17: "res5"}
SHAPES = {"res2": ShapeSpec(24, 4), "res3": ShapeSpec(32, 8), "res4": ShapeSpec(96, 16), "res5": ShapeSpec(320, 32)}


def _conv_bn(inp: int, oup: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> list:
    layers = [nn.Conv2d(inp, oup, kernel, stride, kernel // 2, groups=groups, bias=False), FrozenBatchNorm2d(oup)]
    return layers + [nn.ReLU6(inplace=True)] if relu else layers


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = [] if expand_ratio == 1 else _conv_bn(inp, hidden, 1)
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden) + _conv_bn(hidden, oup, 1, relu=False)
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    size_divisibility = 0

    def __init__(self, out_features: Sequence[str] = ("res3", "res4", "res5"), *, in_channels: int = 3):
        super().__init__()
        unknown = [f for f in out_features if f not in SHAPES]
        if unknown or not out_features:
            raise ValueError(f"MobileNetV2 has no outputs {unknown or list(out_features)}; it has {', '.join(SHAPES)}")
        self.out_features = tuple(out_features)
        self.features = nn.ModuleList([nn.Sequential(*_conv_bn(in_channels, 32, 3, 2))])
        ch = 32
        for t, c, n, s in SETTINGS:
            for i in range(n):
                self.features.append(InvertedResidual(ch, c, s if i == 0 else 1, t))
                ch = c
        # Blocks after the last requested output are skipped at run time (their weights still load).
        self.last = max(i for i, name in RETURN_INDICES.items() if name in self.out_features)

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {f: SHAPES[f] for f in self.out_features}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for i, m in enumerate(self.features[: self.last + 1]):
            x = m(x)
            if RETURN_INDICES.get(i) in self.out_features:
                out[RETURN_INDICES[i]] = x
        return out
