"""MixVisionTransformer, the SegFormer encoder (MiT-B0..B5), for inference.

Four stages; each: overlapping patch embedding (strided conv + LayerNorm), transformer layers
with spatial-reduction attention (keys/values from a `sr_ratio`-strided conv of the tokens) and
Mix-FFN (1x1 conv, 3x3 depthwise conv, GELU, 1x1 conv), then a LayerNorm. Names follow mmseg
(`layers.i.0` patch embed, `layers.i.1.j` blocks, `layers.i.2` norm).
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .layers import GELU, PatchEmbed, activation, multihead_attention, nchw_to_nlc, nlc_to_nchw, _TorchMHAWeights


class MixFFN(nn.Module):
    def __init__(self, embed_dims, feedforward_channels, act: dict = GELU):
        super().__init__()
        # mmseg: Sequential(fc1, pe_conv, act, drop, fc2, drop); the dropouts hold no weights.
        self.layers = nn.Sequential(
            nn.Conv2d(embed_dims, feedforward_channels, 1),
            nn.Conv2d(feedforward_channels, feedforward_channels, 3, 1, 1, groups=feedforward_channels),
            activation(act), nn.Identity(),
            nn.Conv2d(feedforward_channels, embed_dims, 1))

    def forward(self, x, hw, identity):
        return identity + nchw_to_nlc(self.layers(nlc_to_nchw(x, hw)))


class EfficientMultiheadAttention(nn.Module):
    def __init__(self, embed_dims, num_heads, sr_ratio=1, qkv_bias=True, ln_eps=1e-6):
        super().__init__()
        self.attn = _TorchMHAWeights(embed_dims, qkv_bias)
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(embed_dims, eps=ln_eps)

    def forward(self, x, hw, identity):
        kv = x
        if self.sr_ratio > 1:
            kv = self.norm(nchw_to_nlc(self.sr(nlc_to_nchw(x, hw))))
        out = multihead_attention(x, kv, kv, self.attn.in_proj_weight, self.attn.in_proj_bias, self.attn.out_proj,
                                  self.num_heads)
        return identity + out


class TransformerEncoderLayer(nn.Module):
    def __init__(self, embed_dims, num_heads, feedforward_channels, sr_ratio, qkv_bias, act, ln_eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=ln_eps)
        self.attn = EfficientMultiheadAttention(embed_dims, num_heads, sr_ratio, qkv_bias, ln_eps)
        self.norm2 = nn.LayerNorm(embed_dims, eps=ln_eps)
        self.ffn = MixFFN(embed_dims, feedforward_channels, act)

    def forward(self, x, hw):
        x = self.attn(self.norm1(x), hw, identity=x)
        return self.ffn(self.norm2(x), hw, identity=x)


class MixVisionTransformer(nn.Module):
    def __init__(self, in_channels=3, embed_dims=64, num_layers: Sequence[int] = (3, 4, 6, 3),
                 num_heads: Sequence[int] = (1, 2, 4, 8), patch_sizes: Sequence[int] = (7, 3, 3, 3),
                 strides: Sequence[int] = (4, 2, 2, 2), sr_ratios: Sequence[int] = (8, 4, 2, 1),
                 out_indices: Sequence[int] = (0, 1, 2, 3), mlp_ratio=4, qkv_bias=True, act: dict = GELU,
                 ln_eps=1e-6):
        super().__init__()
        if not len(num_layers) == len(num_heads) == len(patch_sizes) == len(strides) == len(sr_ratios):
            raise ValueError("MixVisionTransformer: num_layers, num_heads, patch_sizes, strides and sr_ratios "
                             "must have one entry per stage")
        self.out_indices = tuple(out_indices)
        self.layers = nn.ModuleList()
        for i, n in enumerate(num_layers):
            dims = embed_dims * num_heads[i]
            embed = PatchEmbed(in_channels, dims, patch_sizes[i], strides[i], patch_sizes[i] // 2,
                               norm={"type": "LN", "eps": ln_eps})
            blocks = nn.ModuleList([TransformerEncoderLayer(dims, num_heads[i], mlp_ratio * dims, sr_ratios[i],
                                                            qkv_bias, act, ln_eps) for _ in range(n)])
            self.layers.append(nn.ModuleList([embed, blocks, nn.LayerNorm(dims, eps=ln_eps)]))
            in_channels = dims

    def forward(self, x):
        outs = []
        for i, (embed, blocks, norm) in enumerate(self.layers):
            x, hw = embed(x)
            for block in blocks:
                x = block(x, hw)
            x = nlc_to_nchw(norm(x), hw)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
