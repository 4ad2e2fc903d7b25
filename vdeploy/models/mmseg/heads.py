"""MMSegmentation decode heads for inference: the base head (input selection, `conv_seg`) and
the convolutional heads FCN, PSP, ASPP (DeepLabV3), depthwise-separable ASPP (DeepLabV3+),
UPerNet, semantic FPN and the SegFormer all-MLP head. Each maps the backbone's tuple of
features to class logits at the resolution of its (first) input feature; dropout is an identity
at inference and is left out.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from .layers import (BN, RELU, AdaptiveAvgPool, ConvModule, DepthwiseSeparableConvModule,  # noqa: F401
                     adaptive_avg_pool, resize, resize_to)


class DecodeHead(nn.Module):
    """mmseg's BaseDecodeHead at inference. `input_transform`: None (one feature,
    `inputs[in_index]`), 'multiple_select' (a list of them) or 'resize_concat' (resized to the
    first one's size and concatenated)."""

    def __init__(self, channels: int, num_classes: int, in_index=-1, align_corners: bool = False, *,
                 input_transform: Optional[str] = None, norm: Optional[dict] = BN, act: Optional[dict] = RELU,
                 with_conv_seg: bool = True):
        super().__init__()
        self.in_index = in_index
        self.align_corners = align_corners
        self.input_transform = input_transform
        self.norm, self.act = norm, act
        self.channels = channels
        self.conv_seg = nn.Conv2d(channels, num_classes, 1) if with_conv_seg else None

    def conv(self, cin, cout, kernel_size, padding=0, dilation=1, **kw):
        """A ConvModule with this head's norm and activation."""
        kw.setdefault("norm", self.norm)
        kw.setdefault("act", self.act)
        return ConvModule(cin, cout, kernel_size, 1, padding, dilation, **kw)

    def select(self, inputs):
        if self.input_transform is None:
            return inputs[self.in_index]
        picked = [inputs[i] for i in self.in_index]
        if self.input_transform == "multiple_select":
            return picked
        return torch.cat([resize_to(x, picked[0], self.align_corners) for x in picked], dim=1)

    def features(self, inputs):
        raise NotImplementedError

    def forward(self, inputs):
        return self.conv_seg(self.features(inputs))


def in_channels_of(in_channels, input_transform):
    """The channel count the head sees after its input transform."""
    return sum(in_channels) if input_transform == "resize_concat" else in_channels


class FCNHead(DecodeHead):
    def __init__(self, in_channels, channels, num_classes, *, in_index=-1, num_convs=2, kernel_size=3,
                 dilation=1, concat_input=True, align_corners=False, input_transform=None, norm=BN, act=RELU):
        super().__init__(channels, num_classes, in_index, align_corners, input_transform=input_transform, norm=norm,
                         act=act)
        in_channels = in_channels_of(in_channels, input_transform)
        pad = (kernel_size // 2) * dilation
        if num_convs == 0:
            if in_channels != channels:
                raise ValueError("FCNHead with num_convs=0 needs in_channels == channels")
            self.convs = nn.Identity()
        else:
            self.convs = nn.Sequential(*[self.conv(in_channels if i == 0 else channels, channels, kernel_size, pad,
                                                   dilation) for i in range(num_convs)])
        self.conv_cat = self.conv(in_channels + channels, channels, kernel_size, kernel_size // 2) \
            if concat_input else None

    def concat(self, x, out):
        return out if self.conv_cat is None else self.conv_cat(torch.cat([x, out], dim=1))

    def features(self, inputs):
        x = self.select(inputs)
        return self.concat(x, self.convs(x))


class PPM(nn.ModuleList):
    """Pyramid pooling: per scale, adaptive average pooling then a 1x1 ConvModule, resized back.
    mmseg's entries are Sequential(AdaptiveAvgPool2d, ConvModule); index 0 holds no weights."""

    def __init__(self, pool_scales, in_channels, channels, norm, act, align_corners):
        super().__init__([nn.Sequential(AdaptiveAvgPool(s), ConvModule(in_channels, channels, 1, norm=norm, act=act))
                          for s in pool_scales])
        self.align_corners = align_corners

    def forward(self, x):
        return [resize_to(branch(x), x, self.align_corners) for branch in self]


class PSPHead(DecodeHead):
    def __init__(self, in_channels, channels, num_classes, *, in_index=-1, pool_scales: Sequence[int] = (1, 2, 3, 6),
                 align_corners=False, input_transform=None, norm=BN, act=RELU):
        super().__init__(channels, num_classes, in_index, align_corners, input_transform=input_transform, norm=norm,
                         act=act)
        in_channels = in_channels_of(in_channels, input_transform)
        self.psp_modules = PPM(pool_scales, in_channels, channels, norm, act, align_corners)
        self.bottleneck = self.conv(in_channels + len(pool_scales) * channels, channels, 3, 1)

    def features(self, inputs):
        x = self.select(inputs)
        return self.bottleneck(torch.cat([x] + self.psp_modules(x), dim=1))


class ASPPHead(DecodeHead):
    """DeepLabV3: image pooling + parallel dilated convs, concatenated, then a 3x3 bottleneck."""

    def __init__(self, in_channels, channels, num_classes, *, in_index=-1, dilations: Sequence[int] = (1, 6, 12, 18),
                 align_corners=False, separable=False, input_transform=None, norm=BN, act=RELU):
        super().__init__(channels, num_classes, in_index, align_corners, input_transform=input_transform, norm=norm,
                         act=act)
        in_channels = in_channels_of(in_channels, input_transform)
        self.image_pool = nn.Sequential(AdaptiveAvgPool(1), self.conv(in_channels, channels, 1))
        branches = []
        for d in dilations:
            if d == 1:
                branches.append(self.conv(in_channels, channels, 1))
            elif separable:
                branches.append(DepthwiseSeparableConvModule(in_channels, channels, 3, 1, d, d, norm=norm, act=act))
            else:
                branches.append(self.conv(in_channels, channels, 3, d, d))
        self.aspp_modules = nn.ModuleList(branches)
        self.bottleneck = self.conv((len(dilations) + 1) * channels, channels, 3, 1)

    def aspp(self, x):
        outs = [resize_to(self.image_pool(x), x, self.align_corners)] + [m(x) for m in self.aspp_modules]
        return self.bottleneck(torch.cat(outs, dim=1))

    def features(self, inputs):
        return self.aspp(self.select(inputs))


class DepthwiseSeparableASPPHead(ASPPHead):
    """DeepLabV3+: separable ASPP, fused with low-level features of the first backbone output."""

    def __init__(self, in_channels, channels, num_classes, *, c1_in_channels, c1_channels, in_index=-1,
                 dilations: Sequence[int] = (1, 6, 12, 18), align_corners=False, input_transform=None, norm=BN,
                 act=RELU):
        super().__init__(in_channels, channels, num_classes, in_index=in_index, dilations=dilations,
                         align_corners=align_corners, separable=True, input_transform=input_transform, norm=norm,
                         act=act)
        self.c1_bottleneck = self.conv(c1_in_channels, c1_channels, 1) if c1_in_channels > 0 else None
        self.sep_bottleneck = nn.Sequential(
            DepthwiseSeparableConvModule(channels + c1_channels, channels, 3, 1, 1, norm=norm, act=act),
            DepthwiseSeparableConvModule(channels, channels, 3, 1, 1, norm=norm, act=act))

    def features(self, inputs):
        out = self.aspp(self.select(inputs))
        if self.c1_bottleneck is not None:
            c1 = self.c1_bottleneck(inputs[0])  # mmseg always takes the first backbone output here
            out = torch.cat([resize_to(out, c1, self.align_corners), c1], dim=1)
        return self.sep_bottleneck(out)


class UPerHead(DecodeHead):
    """UPerNet: PPM on the last feature, FPN top-down fusion, all levels concatenated."""

    def __init__(self, in_channels: Sequence[int], channels, num_classes, *, in_index=(0, 1, 2, 3),
                 pool_scales: Sequence[int] = (1, 2, 3, 6), align_corners=False, norm=BN, act=RELU):
        super().__init__(channels, num_classes, tuple(in_index), align_corners, input_transform="multiple_select",
                         norm=norm, act=act)
        self.psp_modules = PPM(pool_scales, in_channels[-1], channels, norm, act, align_corners)
        self.bottleneck = self.conv(in_channels[-1] + len(pool_scales) * channels, channels, 3, 1)
        self.lateral_convs = nn.ModuleList([self.conv(c, channels, 1) for c in in_channels[:-1]])
        self.fpn_convs = nn.ModuleList([self.conv(channels, channels, 3, 1) for _ in in_channels[:-1]])
        self.fpn_bottleneck = self.conv(len(in_channels) * channels, channels, 3, 1)

    def features(self, inputs):
        inputs = self.select(inputs)
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        top = inputs[-1]
        laterals.append(self.bottleneck(torch.cat([top] + self.psp_modules(top), dim=1)))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize_to(laterals[i], laterals[i - 1], self.align_corners)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(len(laterals) - 1)] + [laterals[-1]]
        outs = [outs[0]] + [resize_to(o, outs[0], self.align_corners) for o in outs[1:]]
        return self.fpn_bottleneck(torch.cat(outs, dim=1))


class _Upsample2x(nn.Module):
    """mmseg's Upsample(scale_factor=2, mode='bilinear'): the output size is 2x the input's."""

    def __init__(self, align_corners):
        super().__init__()
        self.align_corners = align_corners

    def forward(self, x):
        return resize(x, (x.shape[2] * 2, x.shape[3] * 2), self.align_corners)


class FPNHead(DecodeHead):
    """Semantic FPN: each level upsampled by 2x steps to the finest stride, summed."""

    def __init__(self, in_channels: Sequence[int], channels, num_classes, *, feature_strides: Sequence[int],
                 in_index=(0, 1, 2, 3), align_corners=False, norm=BN, act=RELU):
        super().__init__(channels, num_classes, tuple(in_index), align_corners, input_transform="multiple_select",
                         norm=norm, act=act)
        if len(feature_strides) != len(in_channels) or min(feature_strides) != feature_strides[0]:
            raise ValueError("FPNHead: feature_strides must match in_channels and start with the smallest")
        heads = []
        for i, stride in enumerate(feature_strides):
            length = max(1, int(math.log2(stride) - math.log2(feature_strides[0])))
            layers: list[nn.Module] = []
            for k in range(length):
                layers.append(self.conv(in_channels[i] if k == 0 else channels, channels, 3, 1))
                if stride != feature_strides[0]:
                    layers.append(_Upsample2x(align_corners))
            heads.append(nn.Sequential(*layers))
        self.scale_heads = nn.ModuleList(heads)

    def features(self, inputs):
        x = self.select(inputs)
        out = self.scale_heads[0](x[0])
        for i in range(1, len(self.scale_heads)):
            out = out + resize_to(self.scale_heads[i](x[i]), out, self.align_corners)
        return out


class SegformerHead(DecodeHead):
    """SegFormer's all-MLP head: 1x1 ConvModule per level, resized to the first, fused."""

    def __init__(self, in_channels: Sequence[int], channels, num_classes, *, in_index=(0, 1, 2, 3),
                 align_corners=False, interpolate_mode="bilinear", norm=BN, act=RELU):
        super().__init__(channels, num_classes, tuple(in_index), align_corners, input_transform="multiple_select",
                         norm=norm, act=act)
        self.interpolate_mode = interpolate_mode
        self.convs = nn.ModuleList([self.conv(c, channels, 1) for c in in_channels])
        # mmseg builds it without act_cfg, so it has ConvModule's default ReLU whatever the head's act
        self.fusion_conv = ConvModule(channels * len(in_channels), channels, 1, norm=norm, act=RELU)

    def features(self, inputs):
        x = self.select(inputs)
        size = x[0].shape[2:]
        outs = [resize(conv(f), size, self.align_corners, self.interpolate_mode) for f, conv in zip(x, self.convs)]
        return self.fusion_conv(torch.cat(outs, dim=1))
