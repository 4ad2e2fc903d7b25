"""MMSegmentation's BiSeNetV1 backbone for inference: a spatial path (three stride-2 convs,
1/8), a context path on a ResNet (attention refinement of its 1/16 and 1/32 features plus a
global-context term, nearest-upsampled to 1/8) and the feature fusion module. Returns the
fused feature, then the two context outputs (for the auxiliary heads), picked by
`out_indices`.

mmseg builds the paths and modules with their own defaults (BN, ReLU): the backbone's
norm_cfg/act_cfg never reach them, so there is no norm/act argument here either. Module names
follow mmseg's so that its checkpoints load unchanged.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .layers import AdaptiveAvgPool, ConvModule, resize


class SpatialPath(nn.Module):
    def __init__(self, in_channels=3, num_channels: Sequence[int] = (64, 64, 64, 128)):
        super().__init__()
        c = num_channels
        self.layer1 = ConvModule(in_channels, c[0], 7, 2, 3)
        self.layer2 = ConvModule(c[0], c[1], 3, 2, 1)
        self.layer3 = ConvModule(c[1], c[2], 3, 2, 1)
        self.layer4 = ConvModule(c[2], c[3], 1)

    def forward(self, x):
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class AttentionRefinementModule(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv_layer = ConvModule(cin, cout, 3, 1, 1)
        self.atten_conv_layer = nn.Sequential(AdaptiveAvgPool(1), ConvModule(cout, cout, 1, act=None), nn.Sigmoid())

    def forward(self, x):
        x = self.conv_layer(x)
        return x * self.atten_conv_layer(x)


class ContextPath(nn.Module):
    def __init__(self, backbone: nn.Module, context_channels: Sequence[int] = (128, 256, 512)):
        super().__init__()
        c = context_channels
        self.backbone = backbone
        self.arm16 = AttentionRefinementModule(c[1], c[0])
        self.arm32 = AttentionRefinementModule(c[2], c[0])
        self.conv_head32 = ConvModule(c[0], c[0], 3, 1, 1)
        self.conv_head16 = ConvModule(c[0], c[0], 3, 1, 1)
        self.gap_conv = nn.Sequential(AdaptiveAvgPool(1), ConvModule(c[2], c[0], 1))

    def forward(self, x):
        _, x_8, x_16, x_32 = self.backbone(x)
        x_32_sum = self.arm32(x_32) + self.gap_conv(x_32)
        x_32_up = self.conv_head32(resize(x_32_sum, x_16.shape[2:], mode="nearest"))
        x_16_sum = self.arm16(x_16) + x_32_up
        x_16_up = self.conv_head16(resize(x_16_sum, x_8.shape[2:], mode="nearest"))
        return x_16_up, x_32_up


class FeatureFusionModule(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = ConvModule(cin, cout, 1)
        self.gap = AdaptiveAvgPool(1)
        self.conv_atten = nn.Sequential(ConvModule(cout, cout, 1), nn.Sigmoid())

    def forward(self, x_sp, x_cp):
        fuse = self.conv1(torch.cat([x_sp, x_cp], dim=1))
        return fuse * self.conv_atten(self.gap(fuse)) + fuse


class BiSeNetV1(nn.Module):
    """`backbone`: the context path's network (a ResNet with four outputs)."""

    def __init__(self, backbone: nn.Module, *, in_channels=3, spatial_channels: Sequence[int] = (64, 64, 64, 128),
                 context_channels: Sequence[int] = (128, 256, 512), out_indices: Sequence[int] = (0, 1, 2),
                 out_channels=256):
        super().__init__()
        if len(spatial_channels) != 4 or len(context_channels) != 3:
            raise ValueError("BiSeNetV1: spatial_channels needs 4 entries, context_channels 3")
        self.out_indices = tuple(out_indices)
        self.context_path = ContextPath(backbone, context_channels)
        self.spatial_path = SpatialPath(in_channels, spatial_channels)
        self.ffm = FeatureFusionModule(context_channels[1], out_channels)

    def forward(self, x):
        context8, context16 = self.context_path(x)
        outs = [self.ffm(self.spatial_path(x), context8), context8, context16]
        return tuple(outs[i] for i in self.out_indices)
