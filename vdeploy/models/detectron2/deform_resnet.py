"""detectron2's DeformBottleneckBlock: a ResNet bottleneck whose 3x3 conv is deformable.

Used in the stages that MODEL.RESNETS.DEFORM_ON_PER_STAGE selects; a 3x3 `conv2_offset` conv
(with bias) predicts the offsets (18 channels per deformable group, 27 with the modulation mask).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .deform_conv import DeformConv, split_offset_mask
from .resnet import Conv2d, make_norm


class DeformBottleneckBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, bottleneck_channels: int, stride: int = 1,
                 num_groups: int = 1, norm: str = "FrozenBN", stride_in_1x1: bool = False, dilation: int = 1,
                 deform_modulated: bool = False, deform_num_groups: int = 1):
        super().__init__()
        self.stride = stride
        self.modulated = deform_modulated
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = Conv2d(in_channels, out_channels, 1, stride=stride, bias=False,
                                   norm=make_norm(norm, out_channels))
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False,
                            norm=make_norm(norm, bottleneck_channels), activation=True)
        self.conv2_offset = Conv2d(bottleneck_channels, (27 if deform_modulated else 18) * deform_num_groups, 3,
                                   stride=stride_3x3, padding=dilation, dilation=dilation)
        self.conv2 = DeformConv(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=dilation,
                                dilation=dilation, groups=num_groups, deformable_groups=deform_num_groups,
                                norm=make_norm(norm, bottleneck_channels), activation=True)
        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, bias=False, norm=make_norm(norm, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        offset, mask = split_offset_mask(self.conv2_offset(out), self.modulated)
        out = self.conv3(self.conv2(out, offset, mask))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))
