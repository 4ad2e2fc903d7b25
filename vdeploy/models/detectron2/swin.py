"""Swin Transformer backbone (shifted-window attention with a relative position bias table), as
detectron2's `modeling/backbone/swin.py` (ViTDet's Swin-B/L baselines), inference only.

Parameter names match detectron2's (`patch_embed.proj`, `layers.0.blocks.1.attn.
relative_position_bias_table`, `layers.0.downsample.reduction`, `norm0`, ...), the relative
position index buffer included, so its checkpoints load unchanged.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .registry import ShapeSpec
from .vit import Mlp, init_linears


def _partition(x: torch.Tensor, w: int) -> torch.Tensor:
    B, H, W, C = x.shape
    return x.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, w, w, C)


def _reverse(windows: torch.Tensor, w: int, H: int, W: int) -> torch.Tensor:
    B = windows.shape[0] // (H * W // w // w)
    return windows.view(B, H // w, W // w, w, w, -1).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, -1)


def shift_mask(Hp: int, Wp: int, window: int, shift: int) -> torch.Tensor:
    """[nW, w*w, w*w] additive mask (0 / -100) that keeps shifted windows from attending across the
    wrap-around, computed from the (traced-constant) padded size as detectron2 computes it."""
    img = np.zeros((Hp, Wp), np.float32)
    cnt = 0
    for h in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for w in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            img[h, w] = cnt
            cnt += 1
    win = img.reshape(Hp // window, window, Wp // window, window).transpose(0, 2, 1, 3).reshape(-1, window * window)
    diff = win[:, None, :] - win[:, :, None]
    return torch.from_numpy(np.where(diff != 0, -100.0, 0.0).astype(np.float32))


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, num_heads: int, qkv_bias: bool = True, qk_scale=None):
        super().__init__()
        self.window, self.num_heads = window, num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += window - 1
        rel[:, :, 1] += window - 1
        rel[:, :, 0] *= 2 * window - 1
        self.register_buffer("relative_position_index", rel.sum(-1))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x, mask=None):
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = (attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)).view(-1, self.num_heads, N, N)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj(x)


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float, qkv_bias: bool,
                 qk_scale, norm_eps: float):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = WindowAttention(dim, window, num_heads, qkv_bias, qk_scale)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, H: int, W: int):
        B, L, C = x.shape
        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        w = self.window
        pad_r, pad_b = (w - W % w) % w, (w - H % w) % w
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        mask = None
        if self.shift > 0:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask = shift_mask(Hp, Wp, w, self.shift).to(x.device)
        windows = self.attn(_partition(x, w).view(-1, w * w, C), mask=mask).view(-1, w, w, C)
        x = _reverse(windows, w, Hp, Wp)
        if self.shift > 0:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        if pad_r or pad_b:
            x = x[:, :H, :W, :]
        x = shortcut + x.reshape(B, H * W, C)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int, norm_eps: float):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=norm_eps)

    def forward(self, x, H: int, W: int):
        B, L, C = x.shape
        x = x.view(B, H, W, C)
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(B, -1, 4 * C)))


class BasicLayer(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float, qkv_bias: bool, qk_scale,
                 norm_eps: float, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, num_heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, qkv_bias, qk_scale,
                                 norm_eps) for i in range(depth))
        self.downsample = PatchMerging(dim, norm_eps) if downsample else None

    def forward(self, x, H: int, W: int):
        for blk in self.blocks:
            x = blk(x, H, W)
        return x, (self.downsample(x, H, W) if self.downsample is not None else x)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, norm_eps, patch_norm: bool):
        super().__init__()
        self.patch_size, self.embed_dim = patch_size, embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if patch_norm else None

    def forward(self, x):
        H, W = x.shape[2], x.shape[3]
        p = self.patch_size
        if W % p:
            x = F.pad(x, (0, p - W % p))
        if H % p:
            x = F.pad(x, (0, 0, 0, p - H % p))
        x = self.proj(x)
        if self.norm is not None:
            Wh, Ww = x.shape[2], x.shape[3]
            x = self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(-1, self.embed_dim, Wh, Ww)
        return x


class SwinTransformer(nn.Module):
    """forward(x) -> {"p0".."p3"} at strides 4..32 (detectron2's names for this backbone)."""

    size_divisibility = 32

    def __init__(self, *, pretrain_img_size: int = 224, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale=None, norm_eps: float = 1e-5,
                 ape: bool = False, patch_norm: bool = True, out_indices: Sequence[int] = (0, 1, 2, 3)):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"Swin depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, norm_eps, patch_norm)
        self.ape = ape
        if ape:
            n = pretrain_img_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, n, n))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.num_features = [int(embed_dim * 2 ** i) for i in range(len(depths))]
        self.layers = nn.ModuleList(
            BasicLayer(self.num_features[i], int(depths[i]), int(num_heads[i]), window_size, mlp_ratio, qkv_bias, qk_scale,
                       norm_eps, downsample=i < len(depths) - 1) for i in range(len(depths)))
        self.out_indices = tuple(int(i) for i in out_indices)
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i], eps=norm_eps))
        self._shapes = {f"p{i}": ShapeSpec(self.num_features[i], 2 ** (i + 2)) for i in self.out_indices}
        init_linears(self)

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)

    def forward(self, x):
        x = self.patch_embed(x)
        Wh, Ww = x.shape[2], x.shape[3]
        if self.ape:
            x = x + F.interpolate(self.absolute_pos_embed, size=(Wh, Ww), mode="bicubic")
        x = x.flatten(2).transpose(1, 2)
        outs = {}
        for i, layer in enumerate(self.layers):
            x_out, x = layer(x, Wh, Ww)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(x_out)
                outs[f"p{i}"] = out.view(-1, Wh, Ww, self.num_features[i]).permute(0, 3, 1, 2)
            if layer.downsample is not None:
                Wh, Ww = (Wh + 1) // 2, (Ww + 1) // 2
        return outs
