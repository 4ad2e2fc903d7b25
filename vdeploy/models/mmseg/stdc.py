"""MMSegmentation's STDC backbones for inference: STDCNet (short-term dense concatenation) and
the STDC context path around it (attention refinement of the last two stages plus a global
context, fused with the stride-8 features). Names follow mmseg's so that checkpoints load.

Each STDC module splits its output channels over a chain of convs (1/2, 1/4, 1/8, ... of the
output), concatenating all of them; a stride-2 module strides the second conv's input by a
depthwise conv and average-pools the first output for the concatenation ('cat' fusion).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .bisenetv1 import AttentionRefinementModule
from .layers import BN, RELU, ConvModule, resize

STAGE_STRIDES = {"STDCNet1": ((2, 1), (2, 1), (2, 1)), "STDCNet2": ((2, 1, 1, 1), (2, 1, 1, 1, 1), (2, 1, 1))}


class STDCModule(nn.Module):
    def __init__(self, cin, cout, stride, *, num_convs=4, norm=BN, act=RELU):
        super().__init__()
        self.with_downsample = stride == 2
        # the first conv keeps ConvModule's default ReLU whatever `act` is (mmseg)
        layers = [ConvModule(cin, cout // 2, 1, norm=norm, act=RELU)]
        if self.with_downsample:
            self.downsample = ConvModule(cout // 2, cout // 2, 3, 2, 1, groups=cout // 2, norm=norm, act=None)
            self.skip = nn.AvgPool2d(3, 2, 1)
        for i in range(1, num_convs):
            div = 2 ** (i + 1) if i != num_convs - 1 else 2 ** i
            layers.append(ConvModule(cout // 2 ** i, cout // div, 3, 1, 1, norm=norm, act=act))
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        x0 = self.layers[0](x)
        x = self.downsample(x0) if self.with_downsample else x0
        outs = [self.skip(x0) if self.with_downsample else x0]
        for layer in self.layers[1:]:
            x = layer(x)
            outs.append(x)
        return torch.cat(outs, dim=1)


class STDCNet(nn.Module):
    """Returns the outputs of the STDC stages (strides 8, 16, 32)."""

    def __init__(self, *, stdc_type="STDCNet1", in_channels=3, channels: Sequence[int] = (32, 64, 256, 512, 1024),
                 num_convs=4, with_final_conv=False, norm=BN, act=RELU):
        super().__init__()
        if stdc_type not in STAGE_STRIDES:
            raise ValueError(f"stdc_type {stdc_type!r} is not one of {sorted(STAGE_STRIDES)}")
        strides = STAGE_STRIDES[stdc_type]
        if len(channels) != len(strides) + 2:
            raise ValueError(f"STDCNet channels needs {len(strides) + 2} entries")
        stages: list[nn.Module] = [ConvModule(in_channels, channels[0], 3, 2, 1, norm=norm, act=act),
                                   ConvModule(channels[0], channels[1], 3, 2, 1, norm=norm, act=act)]
        for i, stage in enumerate(strides):
            cin, cout = channels[i + 1], channels[i + 2]
            stages.append(nn.Sequential(*[STDCModule(cin if j == 0 else cout, cout, s, num_convs=num_convs, norm=norm,
                                                     act=act) for j, s in enumerate(stage)]))
        self.stages = nn.ModuleList(stages)
        if with_final_conv:
            self.final_conv = ConvModule(channels[-1], max(1024, channels[-1]), 1, norm=norm, act=act)

    def forward(self, x):
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        if hasattr(self, "final_conv"):
            outs[-1] = self.final_conv(outs[-1])
        return tuple(outs[2:])


class _FeatureFusion(nn.Module):
    """STDC's feature fusion: 1x1 ConvModule of the concatenation, plus itself gated by channel
    attention (pool, 1x1 + ReLU, 1x1, sigmoid)."""

    def __init__(self, cin, cout, scale_factor=4, *, norm=BN, act=RELU):
        super().__init__()
        mid = cout // scale_factor
        self.conv0 = ConvModule(cin, cout, 1, norm=norm, act=act)
        self.attention = nn.Sequential(_Mean(), ConvModule(cout, mid, 1, norm=None, act=act, bias=False),
                                       ConvModule(mid, cout, 1, norm=None, act=None, bias=False), nn.Sigmoid())

    def forward(self, spatial, context):
        x = self.conv0(torch.cat([spatial, context], dim=1))
        return x * self.attention(x) + x


class _Mean(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True)


class STDCContextPathNet(nn.Module):
    """Outputs (stride-8 features, refined stride-16, refined stride-8 context, fused)."""

    def __init__(self, backbone: nn.Module, *, last_in_channels: Sequence[int] = (1024, 512), out_channels=128,
                 ffm: dict, upsample_mode="nearest", align_corners=None, norm=BN):
        super().__init__()
        self.backbone = backbone
        self.arms = nn.ModuleList([AttentionRefinementModule(c, out_channels) for c in last_in_channels])
        self.convs = nn.ModuleList([ConvModule(out_channels, out_channels, 3, 1, 1, norm=norm)
                                    for _ in last_in_channels])
        self.conv_avg = ConvModule(last_in_channels[0], out_channels, 1, norm=norm)
        self.ffm = _FeatureFusion(ffm["in_channels"], ffm["out_channels"], ffm.get("scale_factor", 4))
        self.upsample_mode, self.align_corners = upsample_mode, bool(align_corners)

    def up(self, x, like):
        return resize(x, like.shape[2:], self.align_corners, self.upsample_mode)

    def forward(self, x):
        outs = list(self.backbone(x))
        up = self.up(self.conv_avg(outs[-1].mean(dim=(2, 3), keepdim=True)), outs[-1])
        arms_out = []
        for i, arm in enumerate(self.arms):
            up = self.convs[i](self.up(arm(outs[-1 - i]) + up, outs[-2 - i]))
            arms_out.append(up)
        return (outs[0], *arms_out, self.ffm(outs[0], arms_out[1]))
