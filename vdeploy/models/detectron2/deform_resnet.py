"""detectron2's DeformBottleneckBlock: a ResNet bottleneck whose 3x3 conv is deformable.

Used in the stages that MODEL.RESNETS.DEFORM_ON_PER_STAGE selects; a 3x3 `conv2_offset` conv
(with bias) predicts the offsets (18 channels per deformable group, 27 with the modulation mask).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .deform_conv import DeformConv, split_offset_mask
from .resnet import BottleneckBlock, Conv2d, make_norm


class DeformBottleneckBlock(BottleneckBlock):
    def __init__(self, in_channels: int, out_channels: int, *, bottleneck_channels: int, stride: int = 1,
                 num_groups: int = 1, norm: str = "FrozenBN", stride_in_1x1: bool = False, dilation: int = 1,
                 deform_modulated: bool = False, deform_num_groups: int = 1):
        super().__init__(in_channels, out_channels, bottleneck_channels=bottleneck_channels, stride=stride,
                         num_groups=num_groups, norm=norm, stride_in_1x1=stride_in_1x1, dilation=dilation)
        self.modulated = deform_modulated
        stride_3x3 = 1 if stride_in_1x1 else stride
        self.conv2_offset = Conv2d(bottleneck_channels, (27 if deform_modulated else 18) * deform_num_groups, 3,
                                   stride=stride_3x3, padding=dilation, dilation=dilation)
        self.conv2 = DeformConv(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=dilation,
                                dilation=dilation, groups=num_groups, deformable_groups=deform_num_groups,
                                norm=make_norm(norm, bottleneck_channels), activation=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        offset, mask = split_offset_mask(self.conv2_offset(out), self.modulated)
        out = self.conv3(self.conv2(out, offset, mask))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))
