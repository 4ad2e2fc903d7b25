"""MMSegmentation's Fast-SCNN backbone for inference: learning-to-downsample (a strided conv and
two strided depthwise-separable convs, stride 8), a global feature extractor (MobileNetV2
inverted residuals, pyramid pooling) and a fusion of both resolutions. Names follow mmseg's.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .heads import PPM
from .layers import BN, RELU, ConvModule, DepthwiseSeparableConvModule, resize
from .mobilenet_v2 import InvertedResidual


class LearningToDownsample(nn.Module):
    def __init__(self, cin, dw_channels: Sequence[int], cout, *, norm=BN, act=RELU, dw_act=None):
        super().__init__()
        self.conv = ConvModule(cin, dw_channels[0], 3, 2, 1, norm=norm, act=act)
        self.dsconv1 = DepthwiseSeparableConvModule(dw_channels[0], dw_channels[1], 3, 2, 1, norm=norm, act=act,
                                                    dw_act=dw_act)
        self.dsconv2 = DepthwiseSeparableConvModule(dw_channels[1], cout, 3, 2, 1, norm=norm, act=act, dw_act=dw_act)

    def forward(self, x):
        return self.dsconv2(self.dsconv1(self.conv(x)))


class GlobalFeatureExtractor(nn.Module):
    def __init__(self, cin, block_channels: Sequence[int], cout, strides: Sequence[int], *, expand_ratio=6,
                 num_blocks=(3, 3, 3), pool_scales=(1, 2, 3, 6), norm=BN, act=RELU, align_corners=False):
        super().__init__()
        for i, (c, n, s) in enumerate(zip(block_channels, num_blocks, strides)):
            prev = cin if i == 0 else block_channels[i - 1]
            self.add_module(f"bottleneck{i + 1}", nn.Sequential(*[
                InvertedResidual(prev if j == 0 else c, c, s if j == 0 else 1, expand_ratio, norm=norm, act=act)
                for j in range(n)]))
        last = block_channels[-1]
        self.ppm = PPM(pool_scales, last, last // 4, norm, act, align_corners)
        self.out = ConvModule(last * 2, cout, 3, 1, 1, norm=norm, act=act)

    def forward(self, x):
        x = self.bottleneck3(self.bottleneck2(self.bottleneck1(x)))
        return self.out(torch.cat([x, *self.ppm(x)], dim=1))


class FeatureFusionModule(nn.Module):
    def __init__(self, higher_channels, lower_channels, cout, *, norm=BN, act=RELU, align_corners=False):
        super().__init__()
        self.align_corners = align_corners
        self.dwconv = ConvModule(lower_channels, cout, 3, 1, 1, groups=cout, norm=norm, act=act)
        self.conv_lower_res = ConvModule(cout, cout, 1, norm=norm, act=None)
        self.conv_higher_res = ConvModule(higher_channels, cout, 1, norm=norm, act=None)
        self.relu = nn.ReLU()

    def forward(self, higher, lower):
        lower = resize(lower, higher.shape[2:], self.align_corners)
        return self.relu(self.conv_higher_res(higher) + self.conv_lower_res(self.dwconv(lower)))


class FastSCNN(nn.Module):
    def __init__(self, *, in_channels=3, downsample_dw_channels=(32, 48), global_in_channels=64,
                 global_block_channels=(64, 96, 128), global_block_strides=(2, 2, 1), global_out_channels=128,
                 higher_in_channels=64, lower_in_channels=128, fusion_out_channels=128, out_indices=(0, 1, 2),
                 norm=BN, act=RELU, align_corners=False, dw_act=None):
        super().__init__()
        if global_in_channels != higher_in_channels or global_out_channels != lower_in_channels:
            raise ValueError("FastSCNN: global_in_channels must equal higher_in_channels and global_out_channels "
                             "lower_in_channels")
        self.out_indices = tuple(out_indices)
        self.learning_to_downsample = LearningToDownsample(in_channels, downsample_dw_channels, global_in_channels,
                                                           norm=norm, act=act, dw_act=dw_act)
        self.global_feature_extractor = GlobalFeatureExtractor(global_in_channels, global_block_channels,
                                                               global_out_channels, global_block_strides, norm=norm,
                                                               act=act, align_corners=align_corners)
        self.feature_fusion = FeatureFusionModule(higher_in_channels, lower_in_channels, fusion_out_channels,
                                                  norm=norm, act=act, align_corners=align_corners)

    def forward(self, x):
        higher = self.learning_to_downsample(x)
        lower = self.global_feature_extractor(higher)
        outs = (higher, lower, self.feature_fusion(higher, lower))
        return tuple(outs[i] for i in self.out_indices)
