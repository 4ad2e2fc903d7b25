"""Vision Transformer (mmseg's VisionTransformer) for inference: the backbone of SETR, Segmenter,
DPT and UPerNet-ViT/DeiT.

Patch embedding (a `patch_size`-strided conv, the image first padded at the bottom/right to a
multiple of the patch as mmseg's 'corner' padding does), a class token, a learned position
embedding, pre-norm transformer layers, features taken after the layers `out_indices` (class
token dropped, reshaped to [N, C, H/16, W/16]).

The position embedding is learned for `img_size`; for any other token grid mmseg resizes it
(`interpolate_mode`, align_corners=False) to the grid. Here it is always resized to the grid
computed from the traced input shape, so one exported graph serves every size: for the grid it
was learned on the resize is an identity (same size, sample points on the source pixels). The
one case that differs is mmseg skipping the resize when a non-square grid happens to have as
many tokens as the learned one (it then adds the embedding in raster order, unresized).
Names follow mmseg (`layers.i.ln1`, `layers.i.attn.attn.in_proj_weight`, `ln1` the final norm).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FFN, GELU, MultiheadAttention, PatchEmbed


def layer_norm(norm: Optional[dict], channels: int) -> nn.LayerNorm:
    if norm is None or norm.get("type") != "LN":
        raise ValueError(f"transformer norms must be LayerNorm (type 'LN'), got {norm!r}")
    return nn.LayerNorm(channels, eps=norm.get("eps", 1e-5))


class TransformerEncoderLayer(nn.Module):
    """mmseg's ViT layer: x + MHA(LN(x)), then x + FFN(LN(x)); LayerNorms `ln1`, `ln2`."""

    def __init__(self, embed_dims, num_heads, feedforward_channels, qkv_bias=True, act: dict = GELU,
                 norm: Optional[dict] = None):
        super().__init__()
        norm = norm or {"type": "LN"}
        self.ln1 = layer_norm(norm, embed_dims)
        self.attn = MultiheadAttention(embed_dims, num_heads, bias=qkv_bias)
        self.ln2 = layer_norm(norm, embed_dims)
        self.ffn = FFN(embed_dims, feedforward_channels, act)

    def forward(self, x):
        x = self.attn(self.ln1(x), identity=x)
        return self.ffn(self.ln2(x), identity=x)


def tokens_to_map(x, hw):
    """[N, H*W, C] tokens -> [N, C, H, W]."""
    return x.reshape(x.shape[0], hw[0], hw[1], x.shape[2]).permute(0, 3, 1, 2).contiguous()


def out_index_list(out_indices, num_layers: int) -> tuple:
    if isinstance(out_indices, int):
        return (num_layers - 1 if out_indices == -1 else out_indices,)
    return tuple(out_indices)


class VisionTransformer(nn.Module):
    def __init__(self, img_size=(224, 224), patch_size=16, patch_pad="corner", in_channels=3, embed_dims=768,
                 num_layers=12, num_heads=12, mlp_ratio=4, out_origin=False, out_indices=-1, qkv_bias=True,
                 with_cls_token=True, output_cls_token=False, norm: Optional[dict] = None, act: dict = GELU,
                 patch_norm=False, patch_bias=False, pre_norm=False, final_norm=False,
                 interpolate_mode="bicubic"):
        super().__init__()
        if output_cls_token and not with_cls_token:
            raise ValueError("VisionTransformer: output_cls_token needs with_cls_token")
        if patch_pad not in ("corner", 0):
            raise ValueError(f"VisionTransformer: patch_pad {patch_pad!r} is not supported ('corner' or 0)")
        norm = norm or {"type": "LN"}
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.pos_grid = (h // patch_size, w // patch_size)
        self.interpolate_mode = interpolate_mode
        self.with_cls_token, self.output_cls_token, self.out_origin = with_cls_token, output_cls_token, out_origin
        self.out_indices = out_index_list(out_indices, num_layers)
        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size, patch_size, 0,
                                      norm=norm if patch_norm else None, bias=patch_bias,
                                      corner_pad=patch_pad == "corner")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pos_grid[0] * self.pos_grid[1] + 1, embed_dims))
        if pre_norm:
            self.ln_pre = layer_norm(norm, embed_dims)
        self.pre_norm = pre_norm
        self.layers = nn.ModuleList([TransformerEncoderLayer(embed_dims, num_heads, mlp_ratio * embed_dims, qkv_bias,
                                                             act, norm) for _ in range(num_layers)])
        if final_norm:
            self.ln1 = layer_norm(norm, embed_dims)
        self.final_norm = final_norm

    def position_embedding(self, hw):
        """The learned embedding resized to the token grid `hw` (class token entry unchanged)."""
        gh, gw = self.pos_grid
        grid = self.pos_embed[:, 1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=hw, mode=self.interpolate_mode, align_corners=False)
        return torch.cat([self.pos_embed[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)

    def output(self, x, hw):
        out = tokens_to_map(x[:, 1:] if self.with_cls_token else x, hw)
        return (out, x[:, 0]) if self.output_cls_token else out

    def forward(self, images):
        x, hw = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.position_embedding(hw)
        if not self.with_cls_token:
            x = x[:, 1:]
        if self.pre_norm:
            x = self.ln_pre(x)
        outs = [self.output(x, hw)] if self.out_origin else []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == len(self.layers) - 1 and self.final_norm:
                x = self.ln1(x)
            if i in self.out_indices:
                outs.append(self.output(x, hw))
        return tuple(outs)
