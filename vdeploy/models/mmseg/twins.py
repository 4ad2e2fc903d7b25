"""Twins backbones (mmseg's PCPVT and SVT) for inference.

PCPVT: four stages of corner-padded patch embedding, transformer layers with global
sub-sampled attention (GSA: keys/values from an `sr_ratio`-strided conv, the SegFormer
attention) and a conditional position encoding (a depthwise 3x3 conv added to the tokens)
after each stage's first layer. SVT alternates locally-grouped self-attention (LSA: attention
inside `window_size` windows) with GSA and normalises each stage's output.

LSA pads the tokens at the bottom/right to whole windows. mmseg masks the padded keys only when
both the bottom and the right needed padding (its `mask[:, -pad:]` fills the whole mask when
`pad` is 0, and then no key is masked); the mask here is built the same way from tensors, so
one exported graph reproduces it at every size. Names follow mmseg (`patch_embeds.i`,
`position_encodings.i.proj`, `layers.i.j`, `norm_list.i`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FFN, GELU, PatchEmbed
from .mit import EfficientMultiheadAttention


class ConditionalPositionEncoding(nn.Module):
    def __init__(self, embed_dims: int):
        super().__init__()
        self.proj = nn.Conv2d(embed_dims, embed_dims, 3, 1, 1, groups=embed_dims)

    def forward(self, x, hw):
        b, _, c = x.shape
        feat = x.transpose(1, 2).reshape(b, c, hw[0], hw[1])
        return (self.proj(feat) + feat).flatten(2).transpose(1, 2)


class GSAEncoderLayer(nn.Module):
    def __init__(self, embed_dims, num_heads, feedforward_channels, sr_ratio, qkv_bias=True, ln_eps=1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=ln_eps)
        self.attn = EfficientMultiheadAttention(embed_dims, num_heads, sr_ratio, qkv_bias, ln_eps)
        self.norm2 = nn.LayerNorm(embed_dims, eps=ln_eps)
        self.ffn = FFN(embed_dims, feedforward_channels, GELU, add_identity=False)

    def forward(self, x, hw):
        x = x + self.attn(self.norm1(x), hw, identity=0.0)
        return x + self.ffn(self.norm2(x))


class LocallyGroupedSelfAttention(nn.Module):
    def __init__(self, embed_dims, num_heads, qkv_bias=True, qk_scale=None, window_size=7):
        super().__init__()
        self.num_heads, self.window_size = num_heads, window_size
        self.scale = qk_scale or (embed_dims // num_heads) ** -0.5
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, x, hw):
        b, n, c = x.shape
        h, w = hw
        ws = self.window_size
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))
        hp, wp = x.shape[1], x.shape[2]
        gh, gw = hp // ws, wp // ws
        row_pad = torch.arange(hp, device=x.device) >= h
        col_pad = torch.arange(wp, device=x.device) >= w
        padded = (row_pad[:, None] | col_pad[None, :]) & (row_pad.any() & col_pad.any())
        padded = padded.to(x.dtype).reshape(1, gh, ws, gw, ws).transpose(2, 3).reshape(1, gh * gw, ws * ws)
        diff = padded.unsqueeze(2) - padded.unsqueeze(3)
        mask = torch.where(diff != 0, torch.full_like(diff, -1000.0), torch.zeros_like(diff))
        x = x.reshape(b, gh, ws, gw, ws, c).transpose(2, 3)
        qkv = self.qkv(x).reshape(b, gh * gw, ws * ws, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)
        attn = (q @ k.transpose(-2, -1)) * self.scale + mask.unsqueeze(2)
        out = (attn.softmax(dim=-1) @ v).transpose(2, 3).reshape(b, gh, gw, ws, ws, c)
        out = out.transpose(2, 3).reshape(b, hp, wp, c)[:, :h, :w, :]
        return self.proj(out.reshape(b, n, c))


class LSAEncoderLayer(nn.Module):
    def __init__(self, embed_dims, num_heads, feedforward_channels, window_size, qkv_bias=True, ln_eps=1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=ln_eps)
        self.attn = LocallyGroupedSelfAttention(embed_dims, num_heads, qkv_bias, None, window_size)
        self.norm2 = nn.LayerNorm(embed_dims, eps=ln_eps)
        self.ffn = FFN(embed_dims, feedforward_channels, GELU, add_identity=False)

    def forward(self, x, hw):
        x = x + self.attn(self.norm1(x), hw)
        return x + self.ffn(self.norm2(x))


class PCPVT(nn.Module):
    def __init__(self, in_channels=3, embed_dims: Sequence[int] = (64, 128, 256, 512),
                 patch_sizes: Sequence[int] = (4, 2, 2, 2), strides: Sequence[int] = (4, 2, 2, 2),
                 num_heads: Sequence[int] = (1, 2, 4, 8), mlp_ratios: Sequence[int] = (4, 4, 4, 4),
                 out_indices: Sequence[int] = (0, 1, 2, 3), qkv_bias=False, depths: Sequence[int] = (3, 4, 6, 3),
                 sr_ratios: Sequence[int] = (8, 4, 2, 1), norm_after_stage=False, ln_eps=1e-5,
                 window_sizes: Sequence[int] = ()):
        super().__init__()
        n = len(depths)
        if not all(len(v) == n for v in (embed_dims, patch_sizes, strides, num_heads, mlp_ratios, sr_ratios)):
            raise ValueError("Twins: embed_dims, patch_sizes, strides, num_heads, mlp_ratios and sr_ratios need "
                             "one entry per stage")
        if window_sizes and len(window_sizes) < n:
            raise ValueError("Twins SVT: windiow_sizes needs one entry per stage")
        self.out_indices = tuple(out_indices)
        self.patch_embeds = nn.ModuleList([
            PatchEmbed(in_channels if i == 0 else embed_dims[i - 1], embed_dims[i], patch_sizes[i], strides[i],
                       norm={"type": "LN", "eps": ln_eps}, corner_pad=True) for i in range(n)])
        self.position_encodings = nn.ModuleList([ConditionalPositionEncoding(d) for d in embed_dims])
        self.layers = nn.ModuleList()
        for k in range(n):
            ffn = mlp_ratios[k] * embed_dims[k]
            # SVT: even layers attend inside windows, odd ones globally (sub-sampled)
            self.layers.append(nn.ModuleList([
                LSAEncoderLayer(embed_dims[k], num_heads[k], ffn, window_sizes[k], qkv_bias)
                if window_sizes and i % 2 == 0 else
                GSAEncoderLayer(embed_dims[k], num_heads[k], ffn, sr_ratios[k], qkv_bias)
                for i in range(depths[k])]))
        self.norm_after_stage = norm_after_stage
        if norm_after_stage:
            self.norm_list = nn.ModuleList([nn.LayerNorm(d, eps=ln_eps) for d in embed_dims])

    def forward(self, x):
        outs = []
        b = x.shape[0]
        for i, embed in enumerate(self.patch_embeds):
            x, hw = embed(x)
            for j, layer in enumerate(self.layers[i]):
                x = layer(x, hw)
                if j == 0:
                    x = self.position_encodings[i](x, hw)
            if self.norm_after_stage:
                x = self.norm_list[i](x)
            x = x.reshape(b, hw[0], hw[1], -1).permute(0, 3, 1, 2).contiguous()
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


class SVT(PCPVT):
    def __init__(self, *args, window_sizes: Sequence[int] = (7, 7, 7), norm_after_stage=True, **kwargs):
        super().__init__(*args, window_sizes=window_sizes, norm_after_stage=norm_after_stage, **kwargs)
