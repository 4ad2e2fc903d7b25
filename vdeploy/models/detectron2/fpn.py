"""detectron2's Feature Pyramid Network on top of a bottom-up backbone.

Names match detectron2 (`fpn_lateral2`, `fpn_output2`, ..., `top_block.p6`, `bottom_up.*`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .registry import ShapeSpec
from .resnet import Conv2d, make_norm


class LastLevelMaxPool(nn.Module):
    """P6 = 1x1 max-pool with stride 2 of P5 (Faster / Mask R-CNN)."""

    num_levels = 1
    in_feature = "p5"

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


class LastLevelP6P7(nn.Module):
    """P6 = 3x3/2 conv of `in_feature` (C5 "res5" or P5 "p5"); P7 = 3x3/2 conv of relu(P6) (RetinaNet)."""

    num_levels = 2

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "res5"):
        super().__init__()
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        p6 = self.p6(x)
        return [p6, self.p7(F.relu(p6))]


class FPN(nn.Module):
    """Top-down pathway with lateral connections over `in_features` of `bottom_up`.

    Args:
        bottom_up: a backbone with `output_shape()` (e.g. ResNet).
        in_features: bottom-up outputs used, finest first (e.g. res2..res5).
        out_channels: channels of every pyramid level.
        norm: norm after the lateral/output convolutions ("" = none, then they have biases).
        top_block: LastLevelMaxPool / LastLevelP6P7 / None, adding levels above the last one.
        fuse_type: "sum" or "avg" of the lateral and the upsampled top-down map.

    forward(x) -> dict "p2".."p6" (names from log2(stride)). `size_divisibility` is the
    coarsest bottom-up stride, so the host pads inputs to a multiple of it (32).
    """

    def __init__(self, bottom_up: nn.Module, in_features: Sequence[str], out_channels: int, *,
                 norm: str = "", top_block: Optional[nn.Module] = None, fuse_type: str = "sum"):
        super().__init__()
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"FPN fuse_type must be 'sum' or 'avg', got {fuse_type!r}")
        shapes = bottom_up.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(f"FPN in_features {missing} are not backbone outputs {sorted(shapes)}")
        self.bottom_up = bottom_up
        self.in_features = tuple(in_features)
        self.fuse_type = fuse_type
        strides = [shapes[f].stride for f in in_features]
        stages = [int(math.log2(s)) for s in strides]
        lateral, output = [], []
        for f, stage in zip(in_features, stages):
            lat = Conv2d(shapes[f].channels, out_channels, 1, bias=norm == "", norm=make_norm(norm, out_channels))
            out = Conv2d(out_channels, out_channels, 3, padding=1, bias=norm == "",
                         norm=make_norm(norm, out_channels))
            self.add_module(f"fpn_lateral{stage}", lat)
            self.add_module(f"fpn_output{stage}", out)
            lateral.append(lat)
            output.append(out)
        # Coarsest level first, the order the top-down pass visits them (not registered twice).
        self._lateral = lateral[::-1]
        self._output = output[::-1]
        self.top_block = top_block
        self._shapes = {f"p{s}": ShapeSpec(out_channels, 2 ** s) for s in stages}
        if top_block is not None:
            last = stages[-1]
            for k in range(1, top_block.num_levels + 1):
                self._shapes[f"p{last + k}"] = ShapeSpec(out_channels, 2 ** (last + k))
        self._out_features = list(self._shapes)
        self.size_divisibility = strides[-1]

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        bottom_up = self.bottom_up(x)
        feats = [bottom_up[f] for f in self.in_features[::-1]]
        prev = self._lateral[0](feats[0])
        results = [self._output[0](prev)]
        for feat, lat_conv, out_conv in zip(feats[1:], self._lateral[1:], self._output[1:]):
            top_down = F.interpolate(prev, scale_factor=2.0, mode="nearest")
            prev = lat_conv(feat) + top_down
            if self.fuse_type == "avg":
                prev = prev / 2
            results.insert(0, out_conv(prev))
        if self.top_block is not None:
            name = self.top_block.in_feature
            top_in = bottom_up[name] if name in bottom_up else results[self._out_features.index(name)]
            results.extend(self.top_block(top_in))
        return dict(zip(self._out_features, results))
