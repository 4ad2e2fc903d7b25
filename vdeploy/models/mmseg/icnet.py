"""MMSegmentation's ICNet backbone for inference: three resolutions of one image. The full
image goes through three light stride-2 convs (1/8); the half image through a ResNet's stem
and first two stages (1/16 of the image); that feature, halved again, through the last two
stages and a pyramid pooling module (1/32). Returns the three branch features for ICNeck.

The ResNet is mmseg's ResNetV1c-style network (deep stem) with its max-pool switched to
ceil_mode, as mmseg's ICNet does. Module names follow mmseg's so that its checkpoints load
unchanged.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .heads import PPM
from .layers import BN, RELU, ConvModule


class ICNet(nn.Module):
    def __init__(self, backbone: nn.Module, *, in_channels=3, layer_channels: Sequence[int] = (512, 2048),
                 light_branch_middle_channels=32, psp_out_channels=512, out_channels: Sequence[int] = (64, 256, 256),
                 pool_scales: Sequence[int] = (1, 2, 3, 6), norm: dict = BN, act: Optional[dict] = RELU,
                 align_corners=False):
        super().__init__()
        if not getattr(backbone, "deep_stem", False):
            raise ValueError("ICNet needs a ResNet with a deep stem (ResNetV1c)")
        self.align_corners = align_corners
        self.backbone = backbone
        self.backbone.maxpool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.psp_modules = PPM(pool_scales, layer_channels[1], psp_out_channels, norm, act, align_corners)
        self.psp_bottleneck = ConvModule(layer_channels[1] + len(pool_scales) * psp_out_channels, psp_out_channels,
                                         3, 1, 1, norm=norm, act=act)
        mid = light_branch_middle_channels
        # mmseg builds these without act_cfg: ConvModule's default ReLU whatever the backbone's act
        self.conv_sub1 = nn.Sequential(ConvModule(in_channels, mid, 3, 2, 1, norm=norm),
                                       ConvModule(mid, mid, 3, 2, 1, norm=norm),
                                       ConvModule(mid, out_channels[0], 3, 2, 1, norm=norm))
        self.conv_sub2 = ConvModule(layer_channels[0], out_channels[1], 1, norm=norm)
        self.conv_sub4 = ConvModule(psp_out_channels, out_channels[2], 1, norm=norm)

    def _half(self, x):
        return F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=self.align_corners)

    def forward(self, x):
        sub1 = self.conv_sub1(x)
        bb = self.backbone
        x = bb.layer2(bb.layer1(bb.maxpool(bb.stem(self._half(x)))))
        sub2 = self.conv_sub2(x)
        x = bb.layer4(bb.layer3(self._half(x)))
        # pooled maps first, then the feature (the reverse of PSPHead's order)
        x = self.psp_bottleneck(torch.cat(self.psp_modules(x) + [x], dim=1))
        return sub1, sub2, self.conv_sub4(x)
