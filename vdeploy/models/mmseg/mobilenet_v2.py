"""MMSegmentation's MobileNetV2 backbone for inference: a stride-2 stem then seven stages of
inverted residual blocks (1x1 expansion, depthwise 3x3, linear 1x1 projection, identity when
shapes allow). The dilated "-d8" variants trade the last strides for dilations. Module names
follow mmseg's (`conv1`, `layerN.M.conv.K`) so that its checkpoints load unchanged.
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from .layers import BN, ConvModule

# (expand ratio, channels, blocks) per stage, as mmseg's arch_settings
ARCH = ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1))
RELU6 = {"type": "ReLU6"}


def make_divisible(value, divisor=8, min_value=None, min_ratio=0.9):
    """mmseg's channel rounding: nearest multiple of `divisor`, never below 90% of `value`."""
    new = max(min_value or divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < min_ratio * value else new


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand_ratio, dilation=1, *, norm: dict = BN,
                 act: Optional[dict] = RELU6):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        hidden = int(round(cin * expand_ratio))
        layers = [ConvModule(cin, hidden, 1, norm=norm, act=act)] if expand_ratio != 1 else []
        layers += [ConvModule(hidden, hidden, 3, stride, dilation, dilation, groups=hidden, norm=norm, act=act),
                   ConvModule(hidden, cout, 1, norm=norm, act=None)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, *, widen_factor: float = 1.0, strides: Sequence[int] = (1, 2, 2, 2, 1, 2, 1),
                 dilations: Sequence[int] = (1, 1, 1, 1, 1, 1, 1), out_indices: Sequence[int] = (1, 2, 4, 6),
                 norm: dict = BN, act: Optional[dict] = RELU6):
        super().__init__()
        if len(strides) != len(ARCH) or len(dilations) != len(ARCH):
            raise ValueError("MobileNetV2: strides and dilations need 7 entries")
        self.out_indices = tuple(out_indices)
        cin = make_divisible(32 * widen_factor, 8)
        self.conv1 = ConvModule(3, cin, 3, 2, 1, norm=norm, act=act)
        self.stage_names = []
        for i, ((expand, channels, blocks), stride, dilation) in enumerate(zip(ARCH, strides, dilations)):
            cout = make_divisible(channels * widen_factor, 8)
            layers = []
            for b in range(blocks):
                # only the first block of a stage strides / dilates (mmseg)
                layers.append(InvertedResidual(cin, cout, stride if b == 0 else 1, expand,
                                               dilation if b == 0 else 1, norm=norm, act=act))
                cin = cout
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            self.stage_names.append(f"layer{i + 1}")

    def forward(self, x):
        x = self.conv1(x)
        outs = []
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
