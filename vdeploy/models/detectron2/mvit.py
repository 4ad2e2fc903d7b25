"""MViTv2 backbone (multiscale attention with pooled q/k/v, window attention in the first stage's
blocks, decomposed relative positions), as detectron2's `modeling/backbone/mvit.py`, inference only.

Parameter names match detectron2's (`patch_embed.proj`, `blocks.1.attn.pool_q`,
`blocks.1.attn.norm_k`, `blocks.2.proj`, `scale2_norm`, ...) so the MViTv2 checkpoints load.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .registry import ShapeSpec
from .vit import (Mlp, PatchEmbed, add_decomposed_rel_pos, get_abs_pos, init_linears, window_partition,
                  window_unpartition)


def attention_pool(x: torch.Tensor, pool: nn.Module, norm=None) -> torch.Tensor:
    """Pool a channels-last [B, H, W, C] map with a channels-first module, then normalise."""
    x = pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return norm(x) if norm is not None else x


class MultiScaleAttention(nn.Module):
    def __init__(self, dim: int, dim_out: int, num_heads: int, *, qkv_bias: bool, norm_eps: float, pool_kernel,
                 stride_q: int, stride_kv: int, residual_pooling: bool, window_size: int, use_rel_pos: bool, input_size):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim_out // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim_out * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)
        padding = [k // 2 for k in pool_kernel]
        c = dim_out // num_heads
        self.pool_q = nn.Conv2d(c, c, pool_kernel, stride=stride_q, padding=padding, groups=c, bias=False)
        self.norm_q = nn.LayerNorm(c, eps=norm_eps)
        self.pool_k = nn.Conv2d(c, c, pool_kernel, stride=stride_kv, padding=padding, groups=c, bias=False)
        self.norm_k = nn.LayerNorm(c, eps=norm_eps)
        self.pool_v = nn.Conv2d(c, c, pool_kernel, stride=stride_kv, padding=padding, groups=c, bias=False)
        self.norm_v = nn.LayerNorm(c, eps=norm_eps)
        self.window_size = window_size
        if window_size:
            self.q_win_size, self.kv_win_size = window_size // stride_q, window_size // stride_kv
        self.residual_pooling = residual_pooling
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size[0] != input_size[1]:
                raise ValueError("MViT relative positions need a square input_size")
            size = input_size[0]
            rel_dim = 2 * max(size // stride_q, size // stride_kv) - 1
            self.rel_pos_h = nn.Parameter(torch.zeros(rel_dim, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(rel_dim, head_dim))

    def forward(self, x):
        B, H, W, _ = x.shape
        qkv = self.qkv(x).reshape(B, H, W, 3, self.num_heads, -1).permute(3, 0, 4, 1, 2, 5)
        q, k, v = qkv.reshape(3, B * self.num_heads, H, W, -1).unbind(0)
        q = attention_pool(q, self.pool_q, self.norm_q)
        k = attention_pool(k, self.pool_k, self.norm_k)
        v = attention_pool(v, self.pool_v, self.norm_v)
        ori_q = q
        if self.window_size:
            q, q_hw_pad = window_partition(q, self.q_win_size)
            k, _ = window_partition(k, self.kv_win_size)
            v, _ = window_partition(v, self.kv_win_size)
            q_hw, kv_hw = (self.q_win_size, self.q_win_size), (self.kv_win_size, self.kv_win_size)
        else:
            q_hw, kv_hw = (q.shape[1], q.shape[2]), (k.shape[1], k.shape[2])
        q = q.reshape(q.shape[0], q_hw[0] * q_hw[1], -1)
        k = k.reshape(k.shape[0], kv_hw[0] * kv_hw[1], -1)
        v = v.reshape(v.shape[0], kv_hw[0] * kv_hw[1], -1)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            attn = add_decomposed_rel_pos(attn, q, self.rel_pos_h, self.rel_pos_w, q_hw, kv_hw)
        x = (attn.softmax(dim=-1) @ v).view(-1, q_hw[0], q_hw[1], v.shape[-1])
        if self.window_size:
            x = window_unpartition(x, self.q_win_size, q_hw_pad, (ori_q.shape[1], ori_q.shape[2]))
        if self.residual_pooling:
            x = x + ori_q
        H, W = x.shape[1], x.shape[2]
        x = x.view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return self.proj(x)


class MultiScaleBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, num_heads: int, *, mlp_ratio: float, norm_eps: float, stride_q: int,
                 **attn):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, norm_eps=norm_eps, stride_q=stride_q, **attn)
        self.norm2 = nn.LayerNorm(dim_out, eps=norm_eps)
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio), dim_out)
        # the shortcut: projected when the width changes, max-pooled when the block strides
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else None
        self.pool_skip = nn.MaxPool2d(stride_q + 1, stride_q, int((stride_q + 1) // 2)) if stride_q > 1 else None

    def forward(self, x):
        x_norm = self.norm1(x)
        x_block = self.attn(x_norm)
        if self.proj is not None:
            x = self.proj(x_norm)
        if self.pool_skip is not None:
            x = attention_pool(x, self.pool_skip)
        x = x + x_block
        return x + self.mlp(self.norm2(x))


class MViT(nn.Module):
    """Stages of blocks ending at `last_block_indexes`; each later stage doubles width and heads and
    halves resolution (stride-2 q pooling in its first block). forward -> {"scale2".."scale5"}."""

    size_divisibility = 0

    def __init__(self, *, img_size: int = 224, patch_kernel=(7, 7), patch_stride=(4, 4), patch_padding=(3, 3),
                 in_chans: int = 3, embed_dim: int = 96, depth: int = 16, num_heads: int = 1,
                 last_block_indexes: Sequence[int] = (0, 2, 11, 15), qkv_pool_kernel=(3, 3), adaptive_kv_stride: int = 4,
                 adaptive_window_size: int = 56, residual_pooling: bool = True, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, norm_eps: float = 1e-5, use_abs_pos: bool = False, use_rel_pos: bool = True,
                 pretrain_img_size: int = 224, pretrain_use_cls_token: bool = True,
                 out_features: Sequence[str] = ("scale2", "scale3", "scale4", "scale5")):
        super().__init__()
        if len(last_block_indexes) != 4 or max(last_block_indexes) >= depth:
            raise ValueError(f"last_block_indexes {list(last_block_indexes)} must be 4 block indexes below depth {depth}")
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.patch_embed = PatchEmbed(tuple(patch_kernel), in_chans, embed_dim, stride=tuple(patch_stride),
                                      padding=tuple(patch_padding))
        if use_abs_pos:
            n = (pretrain_img_size // patch_stride[0]) * (pretrain_img_size // patch_stride[1])
            self.pos_embed = nn.Parameter(torch.zeros(1, n + (1 if pretrain_use_cls_token else 0), embed_dim))
        else:
            self.pos_embed = None
        dim_out, stride_kv, window_size = embed_dim, adaptive_kv_stride, adaptive_window_size
        input_size = [img_size // patch_stride[0], img_size // patch_stride[1]]
        stage, stride = 2, patch_stride[0]
        self._shapes = {}
        self.blocks = nn.ModuleList()
        for i in range(depth):
            stride_kv_ = stride_kv * 2 if i in (last_block_indexes[1], last_block_indexes[2]) else stride_kv
            self.blocks.append(MultiScaleBlock(
                embed_dim, dim_out, num_heads, mlp_ratio=mlp_ratio, norm_eps=norm_eps,
                stride_q=2 if i - 1 in last_block_indexes else 1, qkv_bias=qkv_bias, pool_kernel=tuple(qkv_pool_kernel),
                stride_kv=stride_kv_, residual_pooling=residual_pooling,
                window_size=0 if i in last_block_indexes[1:] else window_size, use_rel_pos=use_rel_pos,
                input_size=list(input_size)))
            embed_dim = dim_out
            if i in last_block_indexes:
                name = f"scale{stage}"
                if name in out_features:
                    self._shapes[name] = ShapeSpec(dim_out, stride)
                    self.add_module(f"{name}_norm", nn.LayerNorm(dim_out, eps=norm_eps))
                dim_out, num_heads = dim_out * 2, num_heads * 2
                stride_kv, stride, stage = max(stride_kv // 2, 1), stride * 2, stage + 1
            if i - 1 in last_block_indexes:
                window_size //= 2
                input_size = [s // 2 for s in input_size]
        unknown = set(out_features) - set(self._shapes)
        if unknown:
            raise ValueError(f"MViT out_features {sorted(unknown)} are not among scale2..scale5")
        self._out_features = tuple(out_features)
        self._last_block_indexes = tuple(last_block_indexes)
        init_linears(self)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {f: self._shapes[f] for f in self._out_features}

    def forward(self, x):
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + get_abs_pos(self.pos_embed, self.pretrain_use_cls_token, (x.shape[1], x.shape[2]))
        outputs, stage = {}, 2
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self._last_block_indexes:
                name = f"scale{stage}"
                if name in self._out_features:
                    outputs[name] = getattr(self, f"{name}_norm")(x).permute(0, 3, 1, 2)
                stage += 1
        return outputs
