"""MMSegmentation decode heads for inference: FCN, PSP, ASPP (DeepLabV3), depthwise-separable
ASPP (DeepLabV3+). Each maps the backbone's tuple of features to class logits at the
resolution of its input feature; dropout is an identity at inference and is left out.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvModule(nn.Module):
    """mmcv's ConvModule with a norm: conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, cin, cout, kernel_size, padding=0, dilation=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, 1, padding, dilation, groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConvModule(nn.Module):
    def __init__(self, cin, cout, kernel_size, padding=0, dilation=1):
        super().__init__()
        self.depthwise_conv = ConvModule(cin, cin, kernel_size, padding, dilation, groups=cin)
        self.pointwise_conv = ConvModule(cin, cout, 1)

    def forward(self, x):
        return self.pointwise_conv(self.depthwise_conv(x))


def resize_to(x, like, align_corners: bool):
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=align_corners)


def adaptive_avg_pool(x, bins: int):
    """`F.adaptive_avg_pool2d(x, bins)` as two matrix products, so that ONNX export works for
    any input size (the ONNX exporter only handles sizes divisible by `bins`)."""
    if bins == 1:
        return x.mean(dim=(2, 3), keepdim=True)
    return torch.matmul(torch.matmul(_pool_matrix(x, 2, bins), x), _pool_matrix(x, 3, bins).transpose(0, 1))


def _pool_matrix(x, dim: int, bins: int):
    """[bins, n] averaging matrix of adaptive pooling along `dim` (PyTorch's bin edges)."""
    n = torch._shape_as_tensor(x)[dim]
    i = torch.arange(bins, device=x.device)
    start = torch.div(i * n, bins, rounding_mode="floor")
    end = torch.div((i + 1) * n + bins - 1, bins, rounding_mode="floor")
    pos = torch.arange(n, device=x.device)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return inside.to(x.dtype) / (end - start)[:, None].to(x.dtype)


class DecodeHead(nn.Module):
    def __init__(self, channels: int, num_classes: int, in_index: int, align_corners: bool):
        super().__init__()
        self.in_index = in_index
        self.align_corners = align_corners
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def features(self, inputs):
        raise NotImplementedError

    def forward(self, inputs):
        return self.conv_seg(self.features(inputs))


class FCNHead(DecodeHead):
    def __init__(self, in_channels, channels, num_classes, *, in_index=-1, num_convs=2, kernel_size=3,
                 dilation=1, concat_input=True, align_corners=False):
        super().__init__(channels, num_classes, in_index, align_corners)
        pad = (kernel_size // 2) * dilation
        self.convs = nn.Sequential(*[ConvModule(in_channels if i == 0 else channels, channels, kernel_size, pad,
                                                dilation) for i in range(num_convs)])
        self.conv_cat = ConvModule(in_channels + channels, channels, kernel_size, kernel_size // 2) \
            if concat_input else None

    def features(self, inputs):
        x = inputs[self.in_index]
        out = self.convs(x)
        if self.conv_cat is not None:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return out


class PSPHead(DecodeHead):
    def __init__(self, in_channels, channels, num_classes, *, in_index=-1, pool_scales: Sequence[int] = (1, 2, 3, 6),
                 align_corners=False):
        super().__init__(channels, num_classes, in_index, align_corners)
        self.pool_scales = tuple(pool_scales)
        # mmseg's PPM is Sequential(AdaptiveAvgPool2d, ConvModule); index 0 holds no weights.
        self.psp_modules = nn.ModuleList(
            [nn.Sequential(nn.Identity(), ConvModule(in_channels, channels, 1)) for _ in self.pool_scales])
        self.bottleneck = ConvModule(in_channels + len(self.pool_scales) * channels, channels, 3, 1)

    def features(self, inputs):
        x = inputs[self.in_index]
        outs = [x]
        for bins, branch in zip(self.pool_scales, self.psp_modules):
            outs.append(resize_to(branch[1](adaptive_avg_pool(x, bins)), x, self.align_corners))
        return self.bottleneck(torch.cat(outs, dim=1))


class ASPPHead(DecodeHead):
    """DeepLabV3: image pooling + parallel dilated convs, concatenated, then a 3x3 bottleneck."""

    def __init__(self, in_channels, channels, num_classes, *, in_index=-1, dilations: Sequence[int] = (1, 6, 12, 18),
                 align_corners=False, separable=False):
        super().__init__(channels, num_classes, in_index, align_corners)
        self.image_pool = nn.Sequential(nn.Identity(), ConvModule(in_channels, channels, 1))
        branches = []
        for d in dilations:
            if d == 1:
                branches.append(ConvModule(in_channels, channels, 1))
            elif separable:
                branches.append(DepthwiseSeparableConvModule(in_channels, channels, 3, d, d))
            else:
                branches.append(ConvModule(in_channels, channels, 3, d, d))
        self.aspp_modules = nn.ModuleList(branches)
        self.bottleneck = ConvModule((len(dilations) + 1) * channels, channels, 3, 1)

    def aspp(self, x):
        pooled = self.image_pool[1](x.mean(dim=(2, 3), keepdim=True))
        outs = [resize_to(pooled, x, self.align_corners)] + [m(x) for m in self.aspp_modules]
        return self.bottleneck(torch.cat(outs, dim=1))

    def features(self, inputs):
        return self.aspp(inputs[self.in_index])


class DepthwiseSeparableASPPHead(ASPPHead):
    """DeepLabV3+: separable ASPP, fused with low-level features of the first backbone output."""

    def __init__(self, in_channels, channels, num_classes, *, c1_in_channels, c1_channels, in_index=-1,
                 dilations: Sequence[int] = (1, 6, 12, 18), align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index=in_index, dilations=dilations,
                         align_corners=align_corners, separable=True)
        self.c1_bottleneck = ConvModule(c1_in_channels, c1_channels, 1) if c1_in_channels > 0 else None
        self.sep_bottleneck = nn.Sequential(
            DepthwiseSeparableConvModule(channels + c1_channels, channels, 3, 1),
            DepthwiseSeparableConvModule(channels, channels, 3, 1))

    def features(self, inputs):
        out = self.aspp(inputs[self.in_index])
        if self.c1_bottleneck is not None:
            c1 = self.c1_bottleneck(inputs[0])  # mmseg always takes the first backbone output here
            out = torch.cat([resize_to(out, c1, self.align_corners), c1], dim=1)
        return self.sep_bottleneck(out)
