"""PoolFormer (mmpretrain's `PoolFormer`, used by mmseg as `mmpretrain.PoolFormer`) for inference.

A 7x7 stride-4 patch embedding, then four stages of blocks whose token mixer is average
pooling minus the input (3x3, padding excluded from the mean) and whose MLP is two 1x1 convs,
each scaled per channel (`layer_scale_*`), with GroupNorm(1) before each. 3x3 stride-2 patch
embeddings sit between stages. `network` interleaves stages (even indices) and embeddings (odd
ones); `out_indices` (0, 2, 4, 6) pick stages, each normalised by its own `norm{i}`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .layers import GELU, activation, norm_layer


class PatchEmbed(nn.Module):
    def __init__(self, in_channels, embed_dims, patch_size, stride, padding):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, stride, padding)

    def forward(self, x):
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, channels, hidden, act: dict):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = activation(act)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class PoolFormerBlock(nn.Module):
    def __init__(self, channels, pool_size, mlp_ratio, norm: dict, act: dict, layer_scale_init_value):
        super().__init__()
        self.norm1 = norm_layer(norm, channels)
        self.pool = nn.AvgPool2d(pool_size, 1, pool_size // 2, count_include_pad=False)
        self.norm2 = norm_layer(norm, channels)
        hidden = int(channels * mlp_ratio)
        self.mlp = Mlp(channels, hidden, act)
        self.layer_scale_1 = nn.Parameter(torch.full((channels,), float(layer_scale_init_value)))
        self.layer_scale_2 = nn.Parameter(torch.full((channels,), float(layer_scale_init_value)))

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.layer_scale_1.view(1, -1, 1, 1) * (self.pool(y) - y)
        return x + self.layer_scale_2.view(1, -1, 1, 1) * self.mlp(self.norm2(x))


class PoolFormer(nn.Module):
    def __init__(self, layers: Sequence[int] = (2, 2, 6, 2), embed_dims: Sequence[int] = (64, 128, 320, 512),
                 mlp_ratios: Sequence[float] = (4, 4, 4, 4), layer_scale_init_value=1e-5, pool_size=3,
                 norm: dict = None, act: dict = GELU, in_patch_size=7, in_stride=4, in_pad=2, down_patch_size=3,
                 down_stride=2, down_pad=1, out_indices: Sequence[int] = (6,)):
        super().__init__()
        norm = norm or {"type": "GN", "num_groups": 1}
        if not len(layers) == len(embed_dims) == len(mlp_ratios):
            raise ValueError("PoolFormer: layers, embed_dims and mlp_ratios need one entry per stage")
        self.patch_embed = PatchEmbed(3, embed_dims[0], in_patch_size, in_stride, in_pad)
        network = []
        dims_at = []  # the channels of each entry of `network`
        for i, n in enumerate(layers):
            network.append(nn.Sequential(*[PoolFormerBlock(embed_dims[i], pool_size, mlp_ratios[i], norm, act,
                                                           layer_scale_init_value) for _ in range(n)]))
            dims_at.append(embed_dims[i])
            if i < len(layers) - 1 and embed_dims[i] != embed_dims[i + 1]:
                network.append(PatchEmbed(embed_dims[i], embed_dims[i + 1], down_patch_size, down_stride, down_pad))
                dims_at.append(embed_dims[i + 1])
        self.network = nn.ModuleList(network)
        self.out_indices = tuple(out_indices)
        if any(not 0 <= i < len(network) for i in self.out_indices):
            raise ValueError(f"PoolFormer: out_indices {self.out_indices} out of range 0..{len(network) - 1}")
        for i in self.out_indices:
            # mmpretrain sizes norm{i} by embed_dims[(i + 1) // 2]
            self.add_module(f"norm{i}", norm_layer(norm, embed_dims[min((i + 1) // 2, len(embed_dims) - 1)]))

    def forward(self, x):
        x = self.patch_embed(x)
        outs = []
        for i, block in enumerate(self.network):
            x = block(x)
            if i in self.out_indices:
                outs.append(getattr(self, f"norm{i}")(x))
        return tuple(outs)
