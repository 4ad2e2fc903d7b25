"""MMSegmentation's ERFNet backbone for inference: an encoder of down-sampler blocks (strided
3x3 conv concatenated with a max pool) and factorised residual blocks (3x1 and 1x3 convs, the
later pair dilated), and a decoder of transposed-conv up-sampler blocks; the output is at
stride 2. Its blocks always use BatchNorm (eps 1e-3) and ReLU whatever the backbone config says,
as in mmseg. Names follow mmseg's (`encoder.N.convs_layers.K`) so that checkpoints load.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .layers import resize

_BN = {"eps": 1e-3}


class DownsamplerBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout - cin, 3, 2, 1)
        self.pool = nn.MaxPool2d(2, 2)
        self.bn = nn.BatchNorm2d(cout, **_BN)
        self.act = nn.ReLU()

    def forward(self, x):
        conv = self.conv(x)
        # odd sizes: the pool is a pixel smaller than the conv and is stretched to it (mmseg)
        pool = resize(self.pool(x), conv.shape[2:], align_corners=False)
        return self.act(self.bn(torch.cat([conv, pool], dim=1)))


class NonBottleneck1d(nn.Module):
    def __init__(self, channels, dilation=1):
        super().__init__()
        self.act = nn.ReLU()
        layers: list[nn.Module] = []
        for i, d in enumerate((1, dilation)):
            layers += [nn.Conv2d(channels, channels, (3, 1), padding=(d, 0), dilation=(d, 1)), self.act,
                       nn.Conv2d(channels, channels, (1, 3), padding=(0, d), dilation=(1, d)),
                       nn.BatchNorm2d(channels, **_BN), self.act if i == 0 else nn.Identity()]
        self.convs_layers = nn.ModuleList(layers)

    def forward(self, x):
        out = x
        for layer in self.convs_layers:
            out = layer(out)
        return self.act(out + x)


class UpsamplerBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1)
        self.bn = nn.BatchNorm2d(cout, **_BN)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class ERFNet(nn.Module):
    def __init__(self, *, in_channels=3, enc_downsample_channels: Sequence[int] = (16, 64, 128),
                 enc_stage_non_bottlenecks: Sequence[int] = (5, 8),
                 enc_non_bottleneck_dilations: Sequence[int] = (2, 4, 8, 16),
                 enc_non_bottleneck_channels: Sequence[int] = (64, 128),
                 dec_upsample_channels: Sequence[int] = (64, 16),
                 dec_stages_non_bottleneck: Sequence[int] = (2, 2),
                 dec_non_bottleneck_channels: Sequence[int] = (64, 16)):
        super().__init__()
        down = enc_downsample_channels
        enc: list[nn.Module] = [DownsamplerBlock(in_channels, down[0])]
        for i in range(len(down) - 1):
            enc.append(DownsamplerBlock(down[i], down[i + 1]))
            if i == len(down) - 2:  # the last stage cycles through the dilations
                for _ in range(enc_stage_non_bottlenecks[-1] // len(enc_non_bottleneck_dilations)):
                    enc += [NonBottleneck1d(down[-1], d) for d in enc_non_bottleneck_dilations]
            else:
                enc += [NonBottleneck1d(down[i + 1]) for _ in range(enc_stage_non_bottlenecks[i])]
        self.encoder = nn.ModuleList(enc)
        dec: list[nn.Module] = []
        for i, c in enumerate(dec_non_bottleneck_channels[:len(dec_upsample_channels)]):
            dec.append(UpsamplerBlock(down[-1] if i == 0 else dec_non_bottleneck_channels[i - 1], c))
            dec += [NonBottleneck1d(c) for _ in range(dec_stages_non_bottleneck[i])]
        self.decoder = nn.ModuleList(dec)

    def forward(self, x):
        for block in self.encoder:
            x = block(x)
        for block in self.decoder:
            x = block(x)
        return (x,)
