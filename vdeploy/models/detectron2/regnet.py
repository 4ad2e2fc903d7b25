"""detectron2's RegNet backbone (RegNetX / RegNetY of the DDS paper), inference only.

Module and parameter names match detectron2's `modeling/backbone/regnet.py` (`stem.conv`,
`stem.bn`, `s1.b1.proj`, `s1.b1.f.a`, `s1.b1.f.a_bn`, `s1.b1.f.se.f_ex.0`, ...), so the
new-baselines checkpoints' `backbone.bottom_up.*` keys load unchanged.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from .registry import ShapeSpec
from .resnet import make_norm


def _conv(w_in: int, w_out: int, k: int, *, stride: int = 1, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(w_in, w_out, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias=bias)


def _norm(norm: str, channels: int) -> nn.Module:
    return make_norm(norm, channels) or nn.Identity()


class SimpleStem(nn.Module):
    """3x3/2 conv + norm + ReLU (stride 2)."""

    stride = 2

    def __init__(self, w_in: int, w_out: int, norm: str):
        super().__init__()
        self.out_channels = w_out
        self.conv, self.bn, self.af = _conv(w_in, w_out, 3, stride=2), _norm(norm, w_out), nn.ReLU()

    def forward(self, x):
        return self.af(self.bn(self.conv(x)))


class ResStem(nn.Module):
    """7x7/2 conv + norm + ReLU + 3x3/2 max-pool (stride 4)."""

    stride = 4

    def __init__(self, w_in: int, w_out: int, norm: str):
        super().__init__()
        self.out_channels = w_out
        self.conv, self.bn, self.af = _conv(w_in, w_out, 7, stride=2), _norm(norm, w_out), nn.ReLU()
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x):
        return self.pool(self.af(self.bn(self.conv(x))))


class SE(nn.Module):
    """Squeeze-and-excitation: global average, 1x1 conv, ReLU, 1x1 conv, sigmoid gate."""

    def __init__(self, w_in: int, w_se: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.f_ex = nn.Sequential(_conv(w_in, w_se, 1, bias=True), nn.ReLU(), _conv(w_se, w_in, 1, bias=True),
                                  nn.Sigmoid())

    def forward(self, x):
        return x * self.f_ex(self.avg_pool(x))


class BottleneckTransform(nn.Module):
    """1x1, 3x3 grouped (strided), optional SE, 1x1."""

    def __init__(self, w_in: int, w_out: int, stride: int, norm: str, bot_mul: float, group_w: int, se_r: float):
        super().__init__()
        w_b = int(round(w_out * bot_mul))
        w_se = int(round(w_in * se_r))
        self.a, self.a_bn, self.a_af = _conv(w_in, w_b, 1), _norm(norm, w_b), nn.ReLU()
        self.b, self.b_bn, self.b_af = _conv(w_b, w_b, 3, stride=stride, groups=w_b // group_w), _norm(norm, w_b), nn.ReLU()
        self.se = SE(w_b, w_se) if w_se else None
        self.c, self.c_bn = _conv(w_b, w_out, 1), _norm(norm, w_out)

    def forward(self, x):
        x = self.b_af(self.b_bn(self.b(self.a_af(self.a_bn(self.a(x))))))
        if self.se is not None:
            x = self.se(x)
        return self.c_bn(self.c(x))


class ResBottleneckBlock(nn.Module):
    """x + f(x), with a 1x1 projection shortcut when the width or the stride changes."""

    def __init__(self, w_in: int, w_out: int, stride: int, norm: str, bot_mul: float, group_w: int, se_r: float):
        super().__init__()
        self.stride, self.out_channels = stride, w_out
        self.proj, self.bn = None, None
        if w_in != w_out or stride != 1:
            self.proj, self.bn = _conv(w_in, w_out, 1, stride=stride), _norm(norm, w_out)
        self.f = BottleneckTransform(w_in, w_out, stride, norm, bot_mul, group_w, se_r)
        self.af = nn.ReLU()

    def forward(self, x):
        shortcut = self.bn(self.proj(x)) if self.proj is not None else x
        return self.af(shortcut + self.f(x))


STEMS = {"SimpleStem": SimpleStem, "ResStem": ResStem}
BLOCKS = {"ResBottleneckBlock": ResBottleneckBlock}


def regnet_stages(w_a: float, w_0: int, w_m: float, depth: int, group_width: int,
                  bottleneck_ratio: float = 1.0, q: int = 8) -> tuple[list[int], list[int], list[int]]:
    """(widths, depths, group widths) per stage, exactly as detectron2's `generate_regnet_parameters`
    followed by `adjust_block_compatibility` (numpy's rounding included)."""
    if not (w_a >= 0 and w_0 > 0 and w_m > 1 and w_0 % q == 0):
        raise ValueError(f"RegNet needs w_a >= 0, w_0 > 0 and a multiple of {q}, w_m > 1; got {w_a}, {w_0}, {w_m}")
    ws_cont = np.arange(depth) * w_a + w_0
    ks = np.round(np.log(ws_cont / w_0) / np.log(w_m))
    ws_all = np.round(np.divide(w_0 * np.power(w_m, ks), q)).astype(int) * q
    ws, ds = (x.tolist() for x in np.unique(ws_all, return_counts=True))
    bs = [bottleneck_ratio] * len(ws)
    gs = [group_width] * len(ws)
    vs = [int(max(1, w * b)) for w, b in zip(ws, bs)]
    gs = [int(min(g, v)) for g, v in zip(gs, vs)]
    ms = [int(np.lcm(g, b)) if b > 1 else g for g, b in zip(gs, bs)]
    vs = [max(m, int(round(v / m) * m)) for v, m in zip(vs, ms)]
    ws = [int(v / b) for v, b in zip(vs, bs)]
    return ws, ds, gs


class RegNet(nn.Module):
    """Stem and stages s1..sN; forward(x) -> {name: feature} for `out_features` ("stem", "s1", ...).

    Args are detectron2's RegNet's: the stage widths and depths come from (w_a, w_0, w_m, depth),
    every stage strides by `stride`, `se_ratio` > 0 makes it a RegNetY.
    """

    size_divisibility = 0

    def __init__(self, *, stem: str = "SimpleStem", stem_width: int, block: str = "ResBottleneckBlock", depth: int,
                 w_a: float, w_0: int, w_m: float, group_width: int, stride: int = 2, bottleneck_ratio: float = 1.0,
                 se_ratio: float = 0.0, norm: str = "BN", out_features: Optional[Sequence[str]] = None,
                 in_channels: int = 3):
        super().__init__()
        if stem not in STEMS or block not in BLOCKS:
            raise ValueError(f"RegNet stem {stem!r} / block {block!r} not supported; stems {sorted(STEMS)}, "
                             f"blocks {sorted(BLOCKS)}")
        ws, ds, gs = regnet_stages(w_a, w_0, w_m, depth, group_width, bottleneck_ratio)
        self.stem = STEMS[stem](in_channels, stem_width, norm)
        cur = self.stem.stride
        self._shapes = {"stem": ShapeSpec(stem_width, cur)}
        self.stage_names: list[str] = []
        prev = stem_width
        for i, (d, w, g) in enumerate(zip(ds, ws, gs)):
            name = f"s{i + 1}"
            stage = nn.Sequential()
            for j in range(d):
                stage.add_module(f"b{j + 1}", BLOCKS[block](prev if j == 0 else w, w, stride if j == 0 else 1, norm,
                                                            bottleneck_ratio, g, se_ratio))
            self.add_module(name, stage)
            self.stage_names.append(name)
            cur *= stride
            self._shapes[name] = ShapeSpec(w, cur)
            prev = w
        out_features = list(out_features or [self.stage_names[-1]])
        unknown = [f for f in out_features if f not in self._shapes]
        if unknown:
            raise ValueError(f"RegNet out_features {unknown} are not among {list(self._shapes)}")
        self._out_features = tuple(out_features)

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {f: self._shapes[f] for f in self._out_features}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            out["stem"] = x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                out[name] = x
        return out
