"""MMSegmentation necks between backbone and decode head (inference only): FPN, ICNeck, JPU.

Module names follow mmseg's (`lateral_convs`, `fpn_convs`) so that checkpoints load unchanged.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvModule, DepthwiseSeparableConvModule, resize


class FPN(nn.Module):
    """mmseg's FPN: 1x1 laterals, top-down sum (nearest upsampling to the finer level's size,
    or by `scale_factor`), 3x3 output convs, then `num_outs - levels` extra levels (stride-2
    max-pool of the last output, or stride-2 3x3 convs on the input/lateral/output)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_outs: int, *, start_level: int = 0,
                 end_level: int = -1, add_extra_convs="", relu_before_extra_convs: bool = False,
                 no_norm_on_lateral: bool = False, norm: Optional[dict] = None, act: Optional[dict] = None,
                 upsample: Optional[dict] = None):
        super().__init__()
        self.num_ins = len(in_channels)
        self.end = self.num_ins if end_level == -1 else end_level
        self.start_level, self.num_outs = start_level, num_outs
        self.add_extra_convs = add_extra_convs  # "" (max-pool), "on_input", "on_lateral" or "on_output"
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample = dict(upsample or {"mode": "nearest"})
        self.lateral_convs = nn.ModuleList([
            ConvModule(in_channels[i], out_channels, 1, norm=None if no_norm_on_lateral else norm, act=act)
            for i in range(start_level, self.end)])
        self.fpn_convs = nn.ModuleList([ConvModule(out_channels, out_channels, 3, 1, 1, norm=norm, act=act)
                                        for _ in range(start_level, self.end)])
        extra = num_outs - self.end + start_level
        if add_extra_convs:
            for i in range(extra):
                cin = in_channels[self.end - 1] if i == 0 and add_extra_convs == "on_input" else out_channels
                self.fpn_convs.append(ConvModule(cin, out_channels, 3, 2, 1, norm=norm, act=act))

    def _up(self, x, like):
        mode = self.upsample.get("mode", "nearest")
        align = self.upsample.get("align_corners") if mode != "nearest" else None
        if "scale_factor" in self.upsample:
            return F.interpolate(x, scale_factor=self.upsample["scale_factor"], mode=mode, align_corners=align)
        return F.interpolate(x, size=like.shape[2:], mode=mode, align_corners=align)

    def forward(self, inputs):
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + self._up(laterals[i], laterals[i - 1])
        n = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(n)]
        if self.num_outs > n:
            if not self.add_extra_convs:
                for _ in range(self.num_outs - n):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                source = {"on_input": inputs[self.end - 1], "on_lateral": laterals[-1],
                          "on_output": outs[-1]}[self.add_extra_convs]
                outs.append(self.fpn_convs[n](source))
                for i in range(n + 1, self.num_outs):
                    # mmseg: the ReLU (if asked) only between extra convs, not before the first
                    outs.append(self.fpn_convs[i](F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]))
        return tuple(outs)


class CascadeFeatureFusion(nn.Module):
    """ICNet's CFF: the coarser map bilinearly resized to the finer one, a dilated 3x3 conv,
    added to a 1x1 conv of the finer map, ReLU. Also returns the resized-and-convolved map."""

    def __init__(self, low_channels, high_channels, out_channels, *, norm, act, align_corners=False):
        super().__init__()
        self.align_corners = align_corners
        self.conv_low = ConvModule(low_channels, out_channels, 3, 1, 2, 2, norm=norm, act=act)
        self.conv_high = ConvModule(high_channels, out_channels, 1, norm=norm, act=act)

    def forward(self, x_low, x_high):
        x_low = self.conv_low(resize(x_low, x_high.shape[2:], self.align_corners))
        return F.relu(x_low + self.conv_high(x_high)), x_low


class ICNeck(nn.Module):
    """ICNet's neck: fuses the 1/32 branch into the 1/16 one, then into the 1/8 one."""

    def __init__(self, in_channels: Sequence[int] = (64, 256, 256), out_channels: int = 128, *,
                 norm: Optional[dict] = None, act: Optional[dict] = None, align_corners=False):
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError("ICNeck needs three input channel counts")
        self.cff_24 = CascadeFeatureFusion(in_channels[2], in_channels[1], out_channels, norm=norm, act=act,
                                           align_corners=align_corners)
        self.cff_12 = CascadeFeatureFusion(out_channels, in_channels[0], out_channels, norm=norm, act=act,
                                           align_corners=align_corners)

    def forward(self, inputs):
        x_sub1, x_sub2, x_sub4 = inputs
        x_cff_24, x_24 = self.cff_24(x_sub4, x_sub2)
        x_cff_12, x_12 = self.cff_12(x_cff_24, x_sub1)
        return x_24, x_12, x_cff_12


class JPU(nn.Module):
    """FastFCN's joint pyramid upsampling: 3x3 convs on the selected levels, resized to the
    finest, concatenated, then parallel dilated separable convs, concatenated. Returns the
    untouched finer inputs followed by that feature (mmseg's order)."""

    def __init__(self, in_channels: Sequence[int] = (512, 1024, 2048), mid_channels: int = 512, *,
                 start_level: int = 0, end_level: int = -1, dilations: Sequence[int] = (1, 2, 4, 8),
                 align_corners=False, norm: Optional[dict] = None, act: Optional[dict] = None):
        super().__init__()
        self.start_level = start_level
        self.end = len(in_channels) if end_level == -1 else end_level
        self.align_corners = align_corners
        self.conv_layers = nn.ModuleList([nn.Sequential(ConvModule(in_channels[i], mid_channels, 3, 1, 1, norm=norm,
                                                                   act=act))
                                          for i in range(start_level, self.end)])
        cat = (self.end - start_level) * mid_channels
        self.dilation_layers = nn.ModuleList([nn.Sequential(DepthwiseSeparableConvModule(
            cat, mid_channels, 3, 1, d, d, norm=norm, act=act, dw_act=None)) for d in dilations])

    def forward(self, inputs):
        feats = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.conv_layers)]
        feats = [feats[0]] + [resize(f, feats[0].shape[2:], self.align_corners) for f in feats[1:]]
        feat = torch.cat(feats, dim=1)
        fused = torch.cat([layer(feat) for layer in self.dilation_layers], dim=1)
        return tuple(inputs[i] for i in range(self.start_level, self.end - 1)) + (fused,)
