"""MMSegmentation's DDRNet (deep dual-resolution network) backbone for inference.

A stride-8 spatial branch and a context branch going down to stride 64 exchange features twice
(the context branch compressed and upsampled into the spatial one, the spatial branch strided
down into the context one); the context branch ends in DAPPM, and the sum of both branches at
stride 8 is the output. Module names follow mmseg's so that its checkpoints load.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .dual_branch_blocks import DAPPM, BasicBlock, Bottleneck, res_layer
from .layers import BN, RELU, ConvModule


def stride8_size(x):
    """The size of the stride-8 maps, which the context branch is resized to. mmseg uses
    (h // 8, w // 8) of the image and fails unless h and w are multiples of 8; the stem's output
    size is the same there and ceil(h / 8) elsewhere, where this then works."""
    return x.shape[-2:]


class DDRNet(nn.Module):
    def __init__(self, *, in_channels=3, channels=32, ppm_channels=128, align_corners=False, norm=BN, act=RELU):
        super().__init__()
        c = channels
        self.align_corners = align_corners

        def layer(block, cin, planes, n, stride=1):
            return res_layer(block, cin, planes, n, stride, norm=norm, act=act, downsample_kind="plain")

        self.stem = nn.Sequential(ConvModule(in_channels, c, 3, 2, 1, norm=norm, act=act),
                                  ConvModule(c, c, 3, 2, 1, norm=norm, act=act), layer(BasicBlock, c, c, 2),
                                  nn.ReLU(), layer(BasicBlock, c, c * 2, 2, 2), nn.ReLU())
        self.relu = nn.ReLU()
        self.context_branch_layers = nn.ModuleList([
            layer(BasicBlock, c * 2, c * 4, 2, 2), layer(BasicBlock, c * 4, c * 8, 2, 2),
            layer(Bottleneck, c * 8, c * 8, 1, 2)])
        self.compression_1 = ConvModule(c * 4, c * 2, 1, norm=norm, act=None)
        self.down_1 = ConvModule(c * 2, c * 4, 3, 2, 1, norm=norm, act=None)
        self.compression_2 = ConvModule(c * 8, c * 2, 1, norm=norm, act=None)
        self.down_2 = nn.Sequential(ConvModule(c * 2, c * 4, 3, 2, 1, norm=norm, act=act),
                                    ConvModule(c * 4, c * 8, 3, 2, 1, norm=norm, act=None))
        self.spatial_branch_layers = nn.ModuleList([
            layer(BasicBlock, c * 2, c * 2, 2), layer(BasicBlock, c * 2, c * 2, 2), layer(Bottleneck, c * 2, c * 2, 1)])
        self.spp = DAPPM(c * 16, ppm_channels, c * 4, 5)

    def up(self, x, size):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, x):
        x = self.stem(x)
        size = stride8_size(x)
        x_c = self.context_branch_layers[0](x)
        x_s = self.spatial_branch_layers[0](x)
        comp = self.compression_1(self.relu(x_c))
        x_c = x_c + self.down_1(self.relu(x_s))
        x_s = x_s + self.up(comp, size)
        x_c = self.context_branch_layers[1](self.relu(x_c))
        x_s = self.spatial_branch_layers[1](self.relu(x_s))
        comp = self.compression_2(self.relu(x_c))
        x_c = x_c + self.down_2(self.relu(x_s))
        x_s = x_s + self.up(comp, size)
        x_s = self.spatial_branch_layers[2](self.relu(x_s))
        x_c = self.spp(self.context_branch_layers[2](self.relu(x_c)))
        return (x_s + self.up(x_c, size),)
