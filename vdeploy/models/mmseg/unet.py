"""MMSegmentation's UNet backbone for inference: an encoder of conv blocks (max-pool or
strided first conv between stages) and a decoder of UpConvBlocks (upsample the deeper map,
concatenate the skip, conv block). Returns the deepest encoder output then every decoder
output, as mmseg does. Module names follow mmseg's so that its checkpoints load unchanged.

The input size must be a multiple of the total down-sampling (mmseg asserts the same);
mmseg's UNet configs infer on fixed sliding windows, so exported graphs always see one.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .layers import BN, RELU, ConvModule, Upsample, activation, norm_layer


class BasicConvBlock(nn.Module):
    def __init__(self, cin, cout, num_convs=2, stride=1, dilation=1, *, norm=BN, act=RELU):
        super().__init__()
        self.convs = nn.Sequential(*[
            ConvModule(cin if i == 0 else cout, cout, 3, stride if i == 0 else 1, 1 if i == 0 else dilation,
                       1 if i == 0 else dilation, norm=norm, act=act) for i in range(num_convs)])

    def forward(self, x):
        return self.convs(x)


class InterpConv(nn.Module):
    """Upsample then a ConvModule (or conv first): `interp_upsample` as in mmseg."""

    def __init__(self, cin, cout, *, norm=BN, act=RELU, conv_first=False, kernel_size=1, stride=1, padding=0,
                 upsample: Optional[dict] = None):
        super().__init__()
        conv = ConvModule(cin, cout, kernel_size, stride, padding, norm=norm, act=act)
        up = Upsample(**(upsample or {"scale_factor": 2, "mode": "bilinear", "align_corners": False}))
        self.interp_upsample = nn.Sequential(conv, up) if conv_first else nn.Sequential(up, conv)

    def forward(self, x):
        return self.interp_upsample(x)


class DeconvModule(nn.Module):
    """Transposed conv, norm, activation (`deconv_upsamping`, mmseg's spelling)."""

    def __init__(self, cin, cout, *, norm=BN, act=RELU, kernel_size=4, scale_factor=2):
        super().__init__()
        if kernel_size < scale_factor or (kernel_size - scale_factor) % 2:
            raise ValueError("DeconvModule: kernel_size - scale_factor must be even and >= 0")
        self.deconv_upsamping = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, scale_factor, (kernel_size - scale_factor) // 2),
            norm_layer(norm, cout), activation(act, cout))

    def forward(self, x):
        return self.deconv_upsamping(x)


class UpConvBlock(nn.Module):
    def __init__(self, cin, skip, cout, num_convs, dilation, *, norm, act, upsample: Optional[dict]):
        super().__init__()
        self.conv_block = BasicConvBlock(2 * skip, cout, num_convs, 1, dilation, norm=norm, act=act)
        if upsample is None:  # no resolution change: a 1x1 ConvModule
            self.upsample = ConvModule(cin, skip, 1, norm=norm, act=act)
        else:
            kw = dict(upsample)
            kind = kw.pop("type")
            self.upsample = (InterpConv if kind == "InterpConv" else DeconvModule)(cin, skip, norm=norm, act=act,
                                                                                    **kw)

    def forward(self, skip, x):
        return self.conv_block(torch.cat([skip, self.upsample(x)], dim=1))


class UNet(nn.Module):
    def __init__(self, *, in_channels=3, base_channels=64, num_stages=5, strides: Sequence[int] = (1, 1, 1, 1, 1),
                 enc_num_convs: Sequence[int] = (2, 2, 2, 2, 2), dec_num_convs: Sequence[int] = (2, 2, 2, 2),
                 downsamples: Sequence[bool] = (True, True, True, True),
                 enc_dilations: Sequence[int] = (1, 1, 1, 1, 1), dec_dilations: Sequence[int] = (1, 1, 1, 1),
                 norm=BN, act=RELU, upsample: Optional[dict] = None):
        super().__init__()
        if not (len(strides) == len(enc_num_convs) == len(enc_dilations) == num_stages
                and len(dec_num_convs) == len(downsamples) == len(dec_dilations) == num_stages - 1):
            raise ValueError("UNet: strides/enc_* need num_stages entries, dec_*/downsamples num_stages - 1")
        upsample = upsample or {"type": "InterpConv"}
        self.encoder, self.decoder = nn.ModuleList(), nn.ModuleList()
        for i in range(num_stages):
            block: list[nn.Module] = []
            if i:
                if strides[i] == 1 and downsamples[i - 1]:
                    block.append(nn.MaxPool2d(2))
                self.decoder.append(UpConvBlock(
                    base_channels * 2 ** i, base_channels * 2 ** (i - 1), base_channels * 2 ** (i - 1),
                    dec_num_convs[i - 1], dec_dilations[i - 1], norm=norm, act=act,
                    upsample=upsample if strides[i] != 1 or downsamples[i - 1] else None))
            block.append(BasicConvBlock(in_channels, base_channels * 2 ** i, enc_num_convs[i], strides[i],
                                        enc_dilations[i], norm=norm, act=act))
            self.encoder.append(nn.Sequential(*block))
            in_channels = base_channels * 2 ** i

    def forward(self, x):
        skips = []
        for enc in self.encoder:
            x = enc(x)
            skips.append(x)
        outs = [x]
        for i in reversed(range(len(self.decoder))):
            x = self.decoder[i](skips[i], x)
            outs.append(x)
        return tuple(outs)
