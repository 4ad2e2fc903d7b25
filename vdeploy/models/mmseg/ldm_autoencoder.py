"""The encoding half of Stable Diffusion's KL autoencoder (CompVis `ldm`'s AutoencoderKL: its
Encoder and `quant_conv`), written without ldm, as MMSegmentation's VPD uses it: image ->
the mean of the latent Gaussian (`encode(x).mode()`, no `scale_factor`).

Names are ldm's (`encoder.conv_in`, `encoder.down.0.block.0.norm1`,
`encoder.down.0.downsample.conv`, `encoder.mid.attn_1.q`, `quant_conv`), so that the
`backbone.encoder_vq.` weights of an mmseg checkpoint load unchanged; the decoder and
`post_quant_conv` are not built (VPD never decodes).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """norm, swish, 3x3 conv, twice, plus the input (through a 1x1 conv when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, with 1x1 convolutions for q, k, v and out."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (conv(n).flatten(2).transpose(1, 2)[:, None] for conv in (self.q, self.k, self.v))  # [B, 1, HW, C]
        out = F.scaled_dot_product_attention(q, k, v)[:, 0]
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """3x3 stride-2 convolution after padding one row and column at the bottom/right only (ldm's
    asymmetric padding)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class _Level(nn.Module):
    """One resolution of the encoder: `block` (ResnetBlocks), then `downsample` except at the last."""

    def __init__(self, blocks: list, downsample: bool, channels: int):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if downsample:
            self.downsample = Downsample(channels)

    def forward(self, x):
        for block in self.block:
            x = block(x)
        return self.downsample(x) if hasattr(self, "downsample") else x


class _Mid(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """ldm's Encoder without attention inside the levels (`attn_resolutions=[]`, as SD's)."""

    def __init__(self, *, in_channels: int, ch: int, ch_mult: Sequence[int], num_res_blocks: int, z_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        width = ch
        for level, mult in enumerate(ch_mult):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(width, ch * mult))
                width = ch * mult
            self.down.append(_Level(blocks, level != len(ch_mult) - 1, width))
        self.mid = _Mid(width)
        self.norm_out = _norm(width)
        self.conv_out = nn.Conv2d(width, 2 * z_channels, 3, padding=1)  # mean and log-variance

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKLEncoder(nn.Module):
    """Image (normalised to about [-1, 1]) -> latent mean [N, embed_dim, H/f, W/f], f = 2^(levels-1)."""

    def __init__(self, *, embed_dim: int, in_channels: int, ch: int, ch_mult: Sequence[int], num_res_blocks: int,
                 z_channels: int):
        super().__init__()
        self.embed_dim = embed_dim
        self.encoder = Encoder(in_channels=in_channels, ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
                               z_channels=z_channels)
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * embed_dim, 1)

    def forward(self, x) -> torch.Tensor:
        moments = self.quant_conv(self.encoder(x))
        # the mode of ldm's DiagonalGaussianDistribution is its mean: the first embed_dim channels
        return moments[:, :self.embed_dim]
