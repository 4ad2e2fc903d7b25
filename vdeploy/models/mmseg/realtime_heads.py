"""Decode heads of mmseg's real-time nets, for inference: Lite R-ASPP (MobileNetV3), the PIDNet
and DDRNet heads (at inference only their main branch runs; the auxiliary branches' weights are
kept so that checkpoints load) and Fast-SCNN's depthwise-separable FCN head. Names follow
mmseg's.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .dual_branch_blocks import PreActConv
from .heads import DecodeHead, FCNHead, in_channels_of
from .layers import BN, RELU, ConvModule, DepthwiseSeparableConvModule, activation, norm_layer, resize


class LRASPPHead(DecodeHead):
    """Lite R-ASPP: the last feature gated by a sigmoid of its (49x49, stride 16x20) average
    pool, then upsampled step by step through the earlier features, each projected and fused."""

    def __init__(self, in_channels: Sequence[int], channels, num_classes, *, in_index=(0, 1, 2),
                 branch_channels: Sequence[int] = (32, 64), align_corners=False, input_transform=None, norm=BN,
                 act=RELU):
        super().__init__(channels, num_classes, tuple(in_index) if not isinstance(in_index, int) else in_index,
                         align_corners, input_transform=input_transform, norm=norm, act=act)
        if input_transform != "multiple_select":
            raise ValueError("LRASPPHead needs input_transform='multiple_select'")
        if len(branch_channels) != len(in_channels) - 1:
            raise ValueError("LRASPPHead: branch_channels needs one entry fewer than in_channels")
        self.num_branches = len(branch_channels)
        self.convs = nn.Sequential()
        self.conv_ups = nn.Sequential()
        for i, b in enumerate(branch_channels):
            self.convs.add_module(f"conv{i}", nn.Conv2d(in_channels[i], b, 1, bias=False))
            self.conv_ups.add_module(f"conv_up{i}", ConvModule(channels + b, channels, 1, norm=norm, act=act,
                                                               bias=False))
        self.conv_up_input = nn.Conv2d(channels, channels, 1)
        self.aspp_conv = ConvModule(in_channels[-1], channels, 1, norm=norm, act=act, bias=False)
        # mmseg pools with a fixed window: features under 49 pixels high or wide are refused there too
        self.image_pool = nn.Sequential(nn.AvgPool2d(49, (16, 20)),
                                        ConvModule(in_channels[2], channels, 1, norm=None, act={"type": "Sigmoid"},
                                                   bias=False))

    def features(self, inputs):
        inputs = self.select(inputs)
        x = inputs[-1]
        x = self.aspp_conv(x) * resize(self.image_pool(x), x.shape[2:], self.align_corners)
        x = self.conv_up_input(x)
        for i in range(self.num_branches - 1, -1, -1):
            x = resize(x, inputs[i].shape[2:], self.align_corners)
            x = self.conv_ups[i](torch.cat([x, self.convs[i](inputs[i])], dim=1))
        return x


class _PIDBranchHead(nn.Module):
    """mmseg's BasePIDHead: a pre-activation 3x3 conv, then norm and activation."""

    def __init__(self, cin, channels, norm, act):
        super().__init__()
        self.conv = PreActConv(cin, channels, 3, 1, norm=norm, act=act)
        self.norm = norm_layer(norm, channels)
        self.act = activation(act)

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


class PIDHead(DecodeHead):
    def __init__(self, in_channels: int, channels, num_classes, *, in_index=-1, align_corners=False,
                 input_transform=None, norm=BN, act=RELU):
        super().__init__(channels, num_classes, in_index, align_corners, input_transform=input_transform, norm=norm,
                         act=act)
        self.i_head = _PIDBranchHead(in_channels, channels, norm, act)
        # training-time branches (P and boundary D): weights only
        self.p_head = _PIDBranchHead(in_channels // 2, channels, norm, act)
        self.d_head = _PIDBranchHead(in_channels // 2, in_channels // 4, norm, RELU)
        self.p_cls_seg = nn.Conv2d(channels, num_classes, 1)
        self.d_cls_seg = nn.Conv2d(in_channels // 4, 1, 1)

    def features(self, inputs):
        return self.i_head(self.select(inputs))


class DDRHead(DecodeHead):
    def __init__(self, in_channels: int, channels, num_classes, *, in_index=-1, align_corners=False,
                 input_transform=None, norm=BN, act=RELU):
        super().__init__(channels, num_classes, in_index, align_corners, input_transform=input_transform, norm=norm,
                         act=act)

        def branch(cin):
            return nn.Sequential(PreActConv(cin, channels, 3, 1, norm=norm, act=act), norm_layer(norm, channels),
                                 activation(act))

        self.head = branch(in_channels)
        self.aux_head = branch(in_channels // 2)  # training-time branch: weights only
        self.aux_cls_seg = nn.Conv2d(channels, num_classes, 1)

    def features(self, inputs):
        return self.head(self.select(inputs))


class DepthwiseSeparableFCNHead(FCNHead):
    """FCNHead whose convs are depthwise-separable (no activation after the depthwise part
    unless `dw_act_cfg` says so); dilation is not used, as in mmseg."""

    def __init__(self, in_channels, channels, num_classes, *, in_index=-1, num_convs=2, kernel_size=3,
                 concat_input=True, dw_act_cfg=None, align_corners=False, input_transform=None, norm=BN, act=RELU):
        if num_convs < 1:
            raise ValueError("DepthwiseSeparableFCNHead needs num_convs >= 1")
        super().__init__(in_channels, channels, num_classes, in_index=in_index, num_convs=num_convs,
                         kernel_size=kernel_size, concat_input=concat_input, align_corners=align_corners,
                         input_transform=input_transform, norm=norm, act=act)
        cin = in_channels_of(in_channels, input_transform)
        pad = kernel_size // 2
        dw_act = {k: v for k, v in dw_act_cfg.items() if k != "inplace"} if dw_act_cfg else None

        def sep(i, o):
            return DepthwiseSeparableConvModule(i, o, kernel_size, 1, pad, norm=norm, act=act, dw_act=dw_act)

        self.convs = nn.Sequential(*[sep(cin if i == 0 else channels, channels) for i in range(num_convs)])
        self.conv_cat = sep(cin + channels, channels) if concat_input else None
