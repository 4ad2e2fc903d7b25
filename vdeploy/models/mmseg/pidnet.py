"""MMSegmentation's PIDNet backbone (proportional / integral / derivative branches) for inference.

The P (detail, stride 8), I (context, down to stride 64, ending in PAPPM or DAPPM) and D
(boundary) branches: twice the I branch is fused into the P branch by a pixel-attention gate
(PagFM) and its 3x3 difference is added to the D branch; at the end the D branch's sigmoid
balances P against I (Bag / LightBag). The small/medium nets (2 stem blocks) use PAPPM and
LightBag, the large one DAPPM and Bag. Module names follow mmseg's so that checkpoints load.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ddrnet import stride8_size
from .dual_branch_blocks import DAPPM, PAPPM, BasicBlock, Bottleneck, PreActConv, res_layer, single_block
from .layers import BN, RELU, ConvModule


class PagFM(nn.Module):
    """Pixel-attention-guided fusion: sigma = sigmoid(<f_p(P), up(f_i(I))>) per pixel, then
    sigma * up(I) + (1 - sigma) * P."""

    def __init__(self, cin, channels, *, norm=BN):
        super().__init__()
        self.f_i = ConvModule(cin, channels, 1, norm=norm, act=None)
        self.f_p = ConvModule(cin, channels, 1, norm=norm, act=None)

    def forward(self, x_p, x_i):
        f_i = F.interpolate(self.f_i(x_i), size=x_p.shape[2:], mode="bilinear", align_corners=False)
        sigma = torch.sigmoid((self.f_p(x_p) * f_i).sum(dim=1, keepdim=True))
        x_i = F.interpolate(x_i, size=x_p.shape[2:], mode="bilinear", align_corners=False)
        return sigma * x_i + (1 - sigma) * x_p


class Bag(nn.Module):
    def __init__(self, cin, cout, *, norm=BN, act=RELU):
        super().__init__()
        self.conv = PreActConv(cin, cout, 3, 1, norm=norm, act=act)

    def forward(self, x_p, x_i, x_d):
        sigma = torch.sigmoid(x_d)
        return self.conv(sigma * x_p + (1 - sigma) * x_i)


class LightBag(nn.Module):
    def __init__(self, cin, cout, *, norm=BN, act=None):
        super().__init__()
        self.f_p = ConvModule(cin, cout, 1, norm=norm, act=act)
        self.f_i = ConvModule(cin, cout, 1, norm=norm, act=act)

    def forward(self, x_p, x_i, x_d):
        sigma = torch.sigmoid(x_d)
        return self.f_p((1 - sigma) * x_i + x_p) + self.f_i(x_i + sigma * x_p)


class PIDNet(nn.Module):
    def __init__(self, *, in_channels=3, channels=64, ppm_channels=96, num_stem_blocks=2, num_branch_blocks=3,
                 align_corners=False, norm=BN, act=RELU):
        super().__init__()
        c = channels
        self.align_corners = align_corners

        def layer(block, cin, planes, n, stride=1):
            return res_layer(block, cin, planes, n, stride, norm=norm, act=act)

        self.stem = nn.Sequential(ConvModule(in_channels, c, 3, 2, 1, norm=norm, act=act),
                                  ConvModule(c, c, 3, 2, 1, norm=norm, act=act),
                                  layer(BasicBlock, c, c, num_stem_blocks), nn.ReLU(),
                                  layer(BasicBlock, c, c * 2, num_stem_blocks, 2), nn.ReLU())
        self.relu = nn.ReLU()
        self.i_branch_layers = nn.ModuleList([
            layer(BasicBlock, c * 2, c * 4, num_branch_blocks, 2),
            layer(BasicBlock, c * 4, c * 8, num_branch_blocks, 2),
            layer(Bottleneck, c * 8, c * 8, 2, 2)])
        self.p_branch_layers = nn.ModuleList([
            layer(BasicBlock, c * 2, c * 2, num_stem_blocks), layer(BasicBlock, c * 2, c * 2, num_stem_blocks),
            layer(Bottleneck, c * 2, c * 2, 1)])
        self.compression_1 = ConvModule(c * 4, c * 2, 1, norm=norm, act=None, bias=False)
        self.compression_2 = ConvModule(c * 8, c * 2, 1, norm=norm, act=None, bias=False)
        self.pag_1 = PagFM(c * 2, c, norm=norm)
        self.pag_2 = PagFM(c * 2, c, norm=norm)
        if num_stem_blocks == 2:
            d_layers = [single_block(BasicBlock, c * 2, c, norm=norm, act=act), layer(Bottleneck, c, c, 1)]
            expand, spp, dfm = 1, PAPPM, LightBag(c * 4, c * 4, norm=norm, act=None)
        else:
            d_layers = [single_block(BasicBlock, c * 2, c * 2, norm=norm, act=act),
                        single_block(BasicBlock, c * 2, c * 2, norm=norm, act=act)]
            expand, spp, dfm = 2, DAPPM, Bag(c * 4, c * 4, norm=norm, act=act)
        self.d_branch_layers = nn.ModuleList(d_layers + [layer(Bottleneck, c * 2, c * 2, 1)])
        self.diff_1 = ConvModule(c * 4, c * expand, 3, 1, 1, norm=norm, act=None, bias=False)
        self.diff_2 = ConvModule(c * 8, c * 2, 3, 1, 1, norm=norm, act=None, bias=False)
        self.spp = spp(c * 16, ppm_channels, c * 4, 5)
        self.dfm = dfm

    def up(self, x, size):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, x):
        x = self.stem(x)
        size = stride8_size(x)
        x_i = self.relu(self.i_branch_layers[0](x))
        x_p = self.pag_1(self.p_branch_layers[0](x), self.compression_1(x_i))
        x_d = self.d_branch_layers[0](x) + self.up(self.diff_1(x_i), size)
        x_i = self.relu(self.i_branch_layers[1](x_i))
        x_p = self.pag_2(self.p_branch_layers[1](self.relu(x_p)), self.compression_2(x_i))
        x_d = self.d_branch_layers[1](self.relu(x_d)) + self.up(self.diff_2(x_i), size)
        x_i = self.i_branch_layers[2](x_i)
        x_p = self.p_branch_layers[2](self.relu(x_p))
        x_d = self.d_branch_layers[2](self.relu(x_d))
        x_i = self.up(self.spp(x_i), size)
        return (self.dfm(x_p, x_i, x_d),)
