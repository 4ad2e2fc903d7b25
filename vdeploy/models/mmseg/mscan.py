"""MSCAN, the SegNeXt encoder (mmseg's MSCAN), for inference.

Four stages of convolutional attention: a two-conv stem (stride 4) or an overlapping 3x3
stride-2 patch embedding, then blocks of multi-scale convolutional attention (a 5x5 depthwise
conv plus three strip-conv branches, 1x7/7x1, 1x11/11x1, 1x21/21x1, whose sum gates the input)
and a conv MLP, each scaled per channel (`layer_scale_*`), and a LayerNorm per stage. Every
stage is an output. Names follow mmseg (`patch_embed{i}`, `block{i}.j`, `norm{i}`).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .layers import GELU, activation, norm_layer


class StemConv(nn.Module):
    def __init__(self, in_channels, out_channels, norm: dict, act: dict = GELU):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, out_channels // 2, 3, 2, 1), norm_layer(norm, out_channels // 2), activation(act),
            nn.Conv2d(out_channels // 2, out_channels, 3, 2, 1), norm_layer(norm, out_channels))

    def forward(self, x):
        return self.proj(x)


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_channels, out_channels, norm: dict, patch_size=3, stride=2):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, patch_size, stride, patch_size // 2)
        self.norm = norm_layer(norm, out_channels)

    def forward(self, x):
        return self.norm(self.proj(x))


class MSCAAttention(nn.Module):
    def __init__(self, channels, kernel_sizes, paddings):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, kernel_sizes[0], padding=paddings[0], groups=channels)
        self.branches = len(kernel_sizes) - 1
        for i, (k, p) in enumerate(zip(kernel_sizes[1:], paddings[1:])):
            # each strip branch: the kernel as given, then transposed
            self.add_module(f"conv{i}_1", nn.Conv2d(channels, channels, tuple(k), padding=tuple(p), groups=channels))
            self.add_module(f"conv{i}_2", nn.Conv2d(channels, channels, tuple(k[::-1]), padding=tuple(p[::-1]),
                                                    groups=channels))
        self.conv3 = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        attn = self.conv0(x)
        total = attn
        for i in range(self.branches):
            total = total + getattr(self, f"conv{i}_2")(getattr(self, f"conv{i}_1")(attn))
        return self.conv3(total) * x


class MSCASpatialAttention(nn.Module):
    def __init__(self, channels, kernel_sizes, paddings, act: dict = GELU):
        super().__init__()
        self.proj_1 = nn.Conv2d(channels, channels, 1)
        self.activation = activation(act)
        self.spatial_gating_unit = MSCAAttention(channels, kernel_sizes, paddings)
        self.proj_2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class ConvMlp(nn.Module):
    """fc1 (1x1), 3x3 depthwise conv, activation, fc2 (1x1)."""

    def __init__(self, channels, hidden, act: dict = GELU):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = activation(act)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class MSCABlock(nn.Module):
    def __init__(self, channels, kernel_sizes, paddings, mlp_ratio, norm: dict, act: dict = GELU):
        super().__init__()
        self.norm1 = norm_layer(norm, channels)
        self.attn = MSCASpatialAttention(channels, kernel_sizes, paddings, act)
        self.norm2 = norm_layer(norm, channels)
        self.mlp = ConvMlp(channels, int(channels * mlp_ratio), act)
        self.layer_scale_1 = nn.Parameter(torch.full((channels,), 1e-2))
        self.layer_scale_2 = nn.Parameter(torch.full((channels,), 1e-2))

    def forward(self, x):
        x = x + self.layer_scale_1.view(1, -1, 1, 1) * self.attn(self.norm1(x))
        return x + self.layer_scale_2.view(1, -1, 1, 1) * self.mlp(self.norm2(x))


class MSCAN(nn.Module):
    def __init__(self, in_channels=3, embed_dims: Sequence[int] = (64, 128, 256, 512),
                 mlp_ratios: Sequence[float] = (4, 4, 4, 4), depths: Sequence[int] = (3, 4, 6, 3), num_stages=4,
                 attention_kernel_sizes=(5, (1, 7), (1, 11), (1, 21)),
                 attention_kernel_paddings=(2, (0, 3), (0, 5), (0, 10)), norm: dict = None, act: dict = GELU):
        super().__init__()
        norm = norm or {"type": "BN"}
        if not (len(embed_dims) >= num_stages and len(mlp_ratios) >= num_stages and len(depths) >= num_stages):
            raise ValueError("MSCAN: embed_dims, mlp_ratios and depths need num_stages entries")
        if len(attention_kernel_sizes) != len(attention_kernel_paddings) or len(attention_kernel_sizes) < 1:
            raise ValueError("MSCAN: attention_kernel_sizes and attention_kernel_paddings must match")
        self.num_stages = num_stages
        for i in range(num_stages):
            # mmseg's stem always takes 3 channels and keeps its GELU default
            embed = StemConv(3, embed_dims[0], norm) if i == 0 else OverlapPatchEmbed(embed_dims[i - 1],
                                                                                     embed_dims[i], norm)
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", nn.ModuleList([
                MSCABlock(embed_dims[i], attention_kernel_sizes, attention_kernel_paddings, mlp_ratios[i], norm, act)
                for _ in range(depths[i])]))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i]))

    def forward(self, x):
        outs = []
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                x = block(x)
            # the stage's LayerNorm over channels
            x = getattr(self, f"norm{i}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs
