"""Swin Transformer (mmseg's SwinTransformer) for inference.

Shifted-window attention on 7x7 (window_size) windows with a learned relative position bias;
the feature map is zero-padded at the bottom/right to a multiple of the window, as mmseg does.
The shift mask is computed from the padded size with tensor operations, so one ONNX graph
serves every input size. Names follow mmseg (`stages.i.blocks.j.attn.w_msa`, `norm{i}`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FFN, GELU, PatchEmbed


class WindowMSA(nn.Module):
    def __init__(self, embed_dims, num_heads, window_size: int, qkv_bias=True, qk_scale=None):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = qk_scale or (embed_dims // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # mmseg's index: row (2*Ww-1) steps per query row + column, flipped (a persistent buffer
        # in its checkpoints, so it is one here too).
        seq1 = torch.arange(0, (2 * window_size - 1) * window_size, 2 * window_size - 1)
        seq2 = torch.arange(0, window_size)
        coords = (seq1[:, None] + seq2[None, :]).reshape(1, -1)
        self.register_buffer("relative_position_index", (coords + coords.T).flip(1).contiguous())
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, x, mask=None):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        ws2 = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(ws2, ws2, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(-1, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


def _region_ids(length, window: int, shift: int, device):
    """Per position of a padded axis: 0, 1 or 2 for mmseg's three shift slices
    (:-window, -window:-shift, -shift:)."""
    pos = torch.arange(length, device=device)
    return (pos >= length - window).long() + (pos >= length - shift).long()


class ShiftWindowMSA(nn.Module):
    def __init__(self, embed_dims, num_heads, window_size, shift_size=0, qkv_bias=True, qk_scale=None):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.w_msa = WindowMSA(embed_dims, num_heads, window_size, qkv_bias, qk_scale)

    def forward(self, x, hw):
        b, _, c = x.shape
        h, w = hw
        ws = self.window_size
        x = x.view(b, h, w, c)
        pad_r = (ws - w % ws) % ws
        pad_b = (ws - h % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = x.shape[1], x.shape[2]
        mask = None
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            ids = (_region_ids(hp, ws, self.shift_size, x.device)[:, None] * 3
                   + _region_ids(wp, ws, self.shift_size, x.device)[None, :])
            win = self.partition(ids[None, :, :, None].to(x.dtype)).view(-1, ws * ws)
            diff = win.unsqueeze(1) - win.unsqueeze(2)
            mask = torch.where(diff != 0, torch.full_like(diff, -100.0), torch.zeros_like(diff))
        out = self.w_msa(self.partition(x).view(-1, ws * ws, c), mask=mask)
        out = out.view(b, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        if self.shift_size > 0:
            out = torch.roll(out, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        return out[:, :h, :w, :].reshape(b, h * w, c)

    def partition(self, x):
        b, h, w, c = x.shape
        ws = self.window_size
        x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(-1, ws, ws, c)


class SwinBlock(nn.Module):
    def __init__(self, embed_dims, num_heads, feedforward_channels, window_size, shift, qkv_bias, qk_scale, act,
                 ln_eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=ln_eps)
        self.attn = ShiftWindowMSA(embed_dims, num_heads, window_size, window_size // 2 if shift else 0, qkv_bias,
                                   qk_scale)
        self.norm2 = nn.LayerNorm(embed_dims, eps=ln_eps)
        self.ffn = FFN(embed_dims, feedforward_channels, act)

    def forward(self, x, hw):
        x = x + self.attn(self.norm1(x), hw)
        return self.ffn(self.norm2(x), identity=x)


class PatchMerging(nn.Module):
    """mmseg's PatchMerging with a 2x2 kernel and stride: nn.Unfold's (C, kh, kw) sample order,
    written as a reshape, then LayerNorm and a linear reduction."""

    def __init__(self, in_channels, out_channels, ln_eps=1e-5, norm=True):
        super().__init__()
        self.norm = nn.LayerNorm(4 * in_channels, eps=ln_eps) if norm else None
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x, hw):
        b, _, c = x.shape
        h, w = hw
        x = x.view(b, h, w, c).permute(0, 3, 1, 2)
        x = F.pad(x, [0, w % 2, 0, h % 2])  # mmseg's corner AdaptivePadding for kernel = stride = 2
        hp, wp = x.shape[2], x.shape[3]
        x = x.reshape(b, c, hp // 2, 2, wp // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * 4)
        if self.norm is not None:
            x = self.norm(x)
        return self.reduction(x), (hp // 2, wp // 2)


class SwinBlockSequence(nn.Module):
    def __init__(self, embed_dims, num_heads, feedforward_channels, depth, window_size, qkv_bias, qk_scale, act,
                 ln_eps, downsample):
        super().__init__()
        self.blocks = nn.ModuleList([SwinBlock(embed_dims, num_heads, feedforward_channels, window_size, i % 2 == 1,
                                               qkv_bias, qk_scale, act, ln_eps) for i in range(depth)])
        self.downsample = downsample

    def forward(self, x, hw):
        for block in self.blocks:
            x = block(x, hw)
        if self.downsample is None:
            return x, hw, x, hw
        down, down_hw = self.downsample(x, hw)
        return down, down_hw, x, hw


class SwinTransformer(nn.Module):
    def __init__(self, in_channels=3, embed_dims=96, patch_size=4, window_size=7, mlp_ratio=4,
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 strides: Sequence[int] = (4, 2, 2, 2), out_indices: Sequence[int] = (0, 1, 2, 3), qkv_bias=True,
                 qk_scale=None, patch_norm=True, act: dict = GELU, ln_eps=1e-5):
        super().__init__()
        if strides[0] != patch_size or any(s != 2 for s in strides[1:]):
            raise ValueError("SwinTransformer: strides must be (patch_size, 2, 2, ...)")
        self.out_indices = tuple(out_indices)
        norm = {"type": "LN", "eps": ln_eps} if patch_norm else None
        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size, strides[0], 0, norm=norm, corner_pad=True)
        self.stages = nn.ModuleList()
        dims = embed_dims
        self.num_features = []
        for i, depth in enumerate(depths):
            down = PatchMerging(dims, 2 * dims, ln_eps, patch_norm) if i < len(depths) - 1 else None
            self.stages.append(SwinBlockSequence(dims, num_heads[i], int(mlp_ratio * dims), depth, window_size,
                                                 qkv_bias, qk_scale, act, ln_eps, down))
            self.num_features.append(dims)
            dims = dims * 2 if down is not None else dims
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i], eps=ln_eps))

    def forward(self, x):
        x, hw = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw, out, out_hw = stage(x, hw)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(out)
                outs.append(out.view(-1, out_hw[0], out_hw[1], self.num_features[i]).permute(0, 3, 1, 2).contiguous())
        return tuple(outs)
