"""BEiT and MAE backbones (mmseg's BEiT, MAE) for inference.

Both: a `patch_size`-strided conv patch embedding, a class token, transformer layers whose
attention adds a learned relative position bias (one table entry per relative offset inside the
`img_size / patch_size` token grid, plus three for class-token <-> patch pairs), and layer-scale
factors `gamma_1`, `gamma_2` on both residual branches. BEiT's qkv projection has biases for q
and v only (k's is zero); MAE's has a full bias and adds a learned absolute position embedding.

The bias table is defined for one grid, so, as in mmseg, the input must be `img_size` (the
configs use sliding windows of that size). Names follow mmseg (`layers.i.attn.q_bias`,
`layers.i.gamma_1`, `ln1` the final norm).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FFN, GELU, PatchEmbed
from .vit import layer_norm, out_index_list, tokens_to_map


def relative_position_index(gh: int, gw: int) -> torch.Tensor:
    """[(gh*gw + 1)^2] table index per (query, key) pair, class token first: patch pairs by
    their offset (dy, dx) as (dy + gh - 1) * (2*gw - 1) + dx + gw - 1, then the three extra
    entries (class -> patch, patch -> class, class -> class) at the end of the table."""
    ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    patch = (ys[:, None] - ys[None, :] + gh - 1) * (2 * gw - 1) + (xs[:, None] - xs[None, :] + gw - 1)
    size = (2 * gh - 1) * (2 * gw - 1) + 3
    index = torch.zeros(gh * gw + 1, gh * gw + 1, dtype=torch.long)
    index[1:, 1:] = patch
    index[0, :] = size - 3
    index[:, 0] = size - 2
    index[0, 0] = size - 1
    return index


class RelativePositionAttention(nn.Module):
    """Multi-head self-attention with BEiT's relative position bias. `bias`: 'qv' (learned q and
    v biases, `q_bias`/`v_bias`), True (a full qkv bias) or False."""

    def __init__(self, embed_dims, num_heads, grid, bias="qv"):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (embed_dims // num_heads) ** -0.5
        self.grid = tuple(grid)
        if bias == "qv":
            self.q_bias = nn.Parameter(torch.zeros(embed_dims))
            self.v_bias = nn.Parameter(torch.zeros(embed_dims))
        self.qv_bias = bias == "qv"
        n = (2 * grid[0] - 1) * (2 * grid[1] - 1) + 3
        self.relative_position_bias_table = nn.Parameter(torch.zeros(n, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(*grid))
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=bias is True)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, x):
        b, n, c = x.shape
        if self.qv_bias:
            qkv = F.linear(x, self.qkv.weight, torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias]))
        else:
            qkv = self.qkv(x)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        tokens = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(tokens, tokens, -1)
        attn = (attn + bias.permute(2, 0, 1).unsqueeze(0)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class BEiTLayer(nn.Module):
    """x + gamma_1 * attn(LN(x)), then x + gamma_2 * FFN(LN(x))."""

    def __init__(self, embed_dims, num_heads, feedforward_channels, grid, bias, act, norm, init_values):
        super().__init__()
        self.ln1 = layer_norm(norm, embed_dims)
        self.attn = RelativePositionAttention(embed_dims, num_heads, grid, bias)
        self.ln2 = layer_norm(norm, embed_dims)
        self.ffn = FFN(embed_dims, feedforward_channels, act, add_identity=False)
        self.gamma_1 = nn.Parameter(init_values * torch.ones(embed_dims))
        self.gamma_2 = nn.Parameter(init_values * torch.ones(embed_dims))

    def forward(self, x):
        x = x + self.gamma_1 * self.attn(self.ln1(x))
        return x + self.gamma_2 * self.ffn(self.ln2(x))


class BEiT(nn.Module):
    absolute_position = False
    attention_bias = "qv"

    def __init__(self, img_size=(224, 224), patch_size=16, in_channels=3, embed_dims=768, num_layers=12,
                 num_heads=12, mlp_ratio=4, out_indices=-1, qv_bias=True, norm: Optional[dict] = None,
                 act: dict = GELU, patch_norm=False, final_norm=False, init_values=0.1):
        super().__init__()
        norm = norm or {"type": "LN"}
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        grid = (h // patch_size, w // patch_size)
        self.grid = grid
        self.out_indices = out_index_list(out_indices, num_layers)
        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size, patch_size, 0,
                                      norm=norm if patch_norm else None)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        if self.absolute_position:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1] + 1, embed_dims))
        bias = self.attention_bias if qv_bias else False
        self.layers = nn.ModuleList([BEiTLayer(embed_dims, num_heads, mlp_ratio * embed_dims, grid, bias, act, norm,
                                               init_values) for _ in range(num_layers)])
        if final_norm:
            self.ln1 = layer_norm(norm, embed_dims)
        self.final_norm = final_norm

    def forward(self, images):
        x, hw = self.patch_embed(images)
        if tuple(int(v) for v in hw) != self.grid:
            raise ValueError(f"{type(self).__name__}: its position terms are learned for a {self.grid} token grid, "
                             f"the input gives {tuple(int(v) for v in hw)} (images or sliding windows must be "
                             f"img_size, as in mmseg)")
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.absolute_position:
            x = x + self.pos_embed
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == len(self.layers) - 1 and self.final_norm:
                x = self.ln1(x)
            if i in self.out_indices:
                outs.append(tokens_to_map(x[:, 1:], hw))
        return tuple(outs)


class MAE(BEiT):
    """BEiT with a full qkv bias and an absolute position embedding (no resizing)."""

    absolute_position = True
    attention_bias = True

    def __init__(self, img_size=(224, 224), patch_size=16, in_channels=3, embed_dims=768, num_layers=12,
                 num_heads=12, mlp_ratio=4, out_indices=-1, norm: Optional[dict] = None, act: dict = GELU,
                 patch_norm=False, final_norm=False, init_values=0.1):
        super().__init__(img_size, patch_size, in_channels, embed_dims, num_layers, num_heads, mlp_ratio, out_indices,
                         True, norm, act, patch_norm, final_norm, init_values)
