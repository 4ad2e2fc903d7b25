"""MMSegmentation's MobileNetV3 backbone (small / large, dilated to stride 8) for inference.

A stride-2 stem, inverted residual blocks with optional squeeze-excitation (ReLU then
HSigmoid gates) and a final 1x1 conv. As in mmseg, the last two stride-2 blocks keep stride 1
and the blocks from the first of them on are dilated (2, then 4 from the second), the padding
growing with the dilation. Stride-2 depthwise convs pad like TensorFlow's 'SAME' (mmcv's
Conv2dAdaptivePadding: the extra row/column at the bottom/right), computed from the traced size
so that exported graphs stay size-generic. Module names follow mmseg's (`layerN.expand_conv`,
`layerN.depthwise_conv`, `layerN.se.conv1`, `layerN.linear_conv`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import BN, RELU, ConvModule
from .mobilenet_v2 import make_divisible

# kernel, expanded channels, output channels, squeeze-excitation, activation, stride
ARCH = {
    "small": ((3, 16, 16, True, "ReLU", 2), (3, 72, 24, False, "ReLU", 2), (3, 88, 24, False, "ReLU", 1),
              (5, 96, 40, True, "HSwish", 2), (5, 240, 40, True, "HSwish", 1), (5, 240, 40, True, "HSwish", 1),
              (5, 120, 48, True, "HSwish", 1), (5, 144, 48, True, "HSwish", 1), (5, 288, 96, True, "HSwish", 2),
              (5, 576, 96, True, "HSwish", 1), (5, 576, 96, True, "HSwish", 1)),
    "large": ((3, 16, 16, False, "ReLU", 1), (3, 64, 24, False, "ReLU", 2), (3, 72, 24, False, "ReLU", 1),
              (5, 72, 40, True, "ReLU", 2), (5, 120, 40, True, "ReLU", 1), (5, 120, 40, True, "ReLU", 1),
              (3, 240, 80, False, "HSwish", 2), (3, 200, 80, False, "HSwish", 1),
              (3, 184, 80, False, "HSwish", 1), (3, 184, 80, False, "HSwish", 1),
              (3, 480, 112, True, "HSwish", 1), (3, 672, 112, True, "HSwish", 1),
              (5, 672, 160, True, "HSwish", 2), (5, 960, 160, True, "HSwish", 1),
              (5, 960, 160, True, "HSwish", 1)),
}
# per arch: the layer whose stride is dropped and dilated by 2, the one dilated by 4 from; the
# channels of the final 1x1 conv; the block index from which `reduction_factor` divides channels
_DILATE = {"small": (4, 9, 576, 8), "large": (7, 13, 960, 12)}
HSWISH = {"type": "HSwish"}


def same_pad(x, kernel: int, stride: int, dilation: int):
    """Pad like TF 'SAME': total (ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, extra at the end."""
    def total(n):
        if torch.is_tensor(n):
            out = torch.div(n + stride - 1, stride, rounding_mode="floor")
            return torch.clamp((out - 1) * stride + (kernel - 1) * dilation + 1 - n, min=0)
        return max((-(-n // stride) - 1) * stride + (kernel - 1) * dilation + 1 - n, 0)

    ph, pw = total(x.shape[-2]), total(x.shape[-1])
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


class SamePadConvModule(ConvModule):
    """A ConvModule whose conv pads 'SAME' at run time (mmcv's Conv2dAdaptivePadding)."""

    def __init__(self, cin, cout, kernel_size, stride=1, dilation=1, groups=1, **kw):
        super().__init__(cin, cout, kernel_size, stride, 0, dilation, groups, **kw)
        self.same = (kernel_size, stride, dilation)

    def forward(self, x):
        return super().forward(same_pad(x, *self.same))


class SELayer(nn.Module):
    """mmseg's SELayer: global pooling, 1x1 conv + ReLU, 1x1 conv + HSigmoid(3, 6), gate."""

    def __init__(self, channels, ratio=4):
        super().__init__()
        mid = make_divisible(channels // ratio, 8)
        self.conv1 = ConvModule(channels, mid, 1, norm=None, act=RELU)
        self.conv2 = ConvModule(mid, channels, 1, norm=None, act={"type": "HSigmoid", "bias": 3.0, "divisor": 6.0})

    def forward(self, x):
        return x * self.conv2(self.conv1(x.mean(dim=(2, 3), keepdim=True)))


class InvertedResidualV3(nn.Module):
    def __init__(self, cin, cout, mid, kernel_size, stride, dilation, with_se, act, norm):
        super().__init__()
        self.with_res_shortcut = stride == 1 and cin == cout
        if cin != mid:
            self.expand_conv = ConvModule(cin, mid, 1, norm=norm, act=act)
        if stride == 2:
            self.depthwise_conv = SamePadConvModule(mid, mid, kernel_size, 2, 1, mid, norm=norm, act=act)
        else:
            self.depthwise_conv = ConvModule(mid, mid, kernel_size, 1, (kernel_size - 1) // 2 * dilation, dilation,
                                             mid, norm=norm, act=act)
        if with_se:
            self.se = SELayer(mid)
        self.linear_conv = ConvModule(mid, cout, 1, norm=norm, act=None)

    def forward(self, x):
        out = self.expand_conv(x) if hasattr(self, "expand_conv") else x
        out = self.depthwise_conv(out)
        if hasattr(self, "se"):
            out = self.se(out)
        out = self.linear_conv(out)
        return x + out if self.with_res_shortcut else out


class MobileNetV3(nn.Module):
    def __init__(self, *, arch: str = "small", out_indices: Sequence[int] = (0, 1, 12), reduction_factor: int = 1,
                 norm: Optional[dict] = BN):
        super().__init__()
        if arch not in ARCH:
            raise ValueError(f"MobileNetV3 arch {arch!r} is not 'small' or 'large'")
        settings = ARCH[arch]
        if any(i not in range(len(settings) + 2) for i in out_indices):
            raise ValueError(f"MobileNetV3 out_indices must be in 0..{len(settings) + 1}")
        self.out_indices = tuple(out_indices)
        dilate2, dilate4, last, reduce_from = _DILATE[arch]
        self.layer0 = SamePadConvModule(3, 16, 3, 2, norm=norm, act=HSWISH)
        cin = 16
        for i, (k, mid, cout, with_se, act, stride) in enumerate(settings):
            if i >= reduce_from:
                mid, cout = mid // reduction_factor, cout // reduction_factor
            layer = i + 1
            dilation = 1 if layer < dilate2 else 2 if layer < dilate4 else 4
            if layer in (dilate2, dilate4):
                stride = 1  # mmseg keeps these convs' 'SAME' padding, which at stride 1 is symmetric
            self.add_module(f"layer{layer}", InvertedResidualV3(cin, cout, mid, k, stride, dilation, with_se,
                                                                {"type": act}, norm))
            cin = cout
        # mmseg sets dilation 4 on this 1x1 conv: no effect on a 1x1 kernel
        self.add_module(f"layer{len(settings) + 1}", ConvModule(cin, last, 1, norm=norm, act=HSWISH))
        self.num_layers = len(settings) + 2

    def forward(self, x):
        outs = []
        for i in range(self.num_layers):
            x = getattr(self, f"layer{i}")(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
