"""ViTDet's plain ViT backbone (window + global attention, decomposed relative positions) and its
SimpleFeaturePyramid, inference only.

Parameter names match detectron2's `modeling/backbone/vit.py` (`net.patch_embed.proj`,
`net.blocks.3.attn.rel_pos_h`, `net.blocks.3.mlp.fc1`, `simfp_2.0`, `simfp_2.4.norm`, ...). Every
op is a plain ONNX op (matmul, einsum, softmax, pad, gather): no custom attention kernel.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .registry import ShapeSpec
from .resnet import Conv2d, make_norm


def init_linears(module: nn.Module) -> None:
    """detectron2's init of the transformer backbones' linear layers, so that a build without
    weights has sensible activations."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def window_partition(x: torch.Tensor, window: int):
    """[B, H, W, C] -> windows [B * nW, window, window, C] (zero-padded to a multiple), (Hp, Wp).

    Padded (by zero when H and W are multiples) and cropped unconditionally: under tracing the
    sizes follow the input, so a pad skipped at the traced size must still be in the graph."""
    B, H, W, C = x.shape
    pad_h, pad_w = (window - H % window) % window, (window - W % window) % window
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window, window, Wp // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, C), (Hp, Wp)


def window_unpartition(windows: torch.Tensor, window: int, pad_hw, hw) -> torch.Tensor:
    Hp, Wp = pad_hw
    H, W = hw
    B = windows.shape[0] // (Hp * Wp // window // window)
    x = windows.view(B, Hp // window, Wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    return x[:, :H, :W, :]


def get_rel_pos(q_size, k_size, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative position embeddings [q_size, k_size, C], resized linearly when the table's length
    is not 2 * max(q, k) - 1 (as detectron2 does for inputs other than the pre-training size).

    q_size / k_size are ints, or 0-d tensors when traced from a shape: every size is then computed
    with tensor ops so the exported graph follows the input size (and, as the length cannot be
    compared at trace time, the table is always resized: an identity at its own length). The
    coordinate ratios are taken in float64 and rounded to float32 as Python floats would be, so
    the gathered indexes are the same as detectron2's."""
    traced = isinstance(q_size, torch.Tensor) or isinstance(k_size, torch.Tensor)
    q_n, k_n = torch.as_tensor(q_size), torch.as_tensor(k_size)
    length = 2 * torch.maximum(q_n, k_n) - 1
    if traced or rel_pos.shape[0] != int(length):
        size = length if traced else int(length)
        rel_pos = F.interpolate(rel_pos.permute(1, 0)[None], size=size, mode="linear")[0].permute(1, 0)
    q_ratio = (k_n.double() / q_n.double()).clamp(min=1.0)
    k_ratio = (q_n.double() / k_n.double()).clamp(min=1.0)
    q_coords = torch.arange(q_n)[:, None] * q_ratio.float()
    k_coords = torch.arange(k_n)[None, :] * k_ratio.float()
    relative = (q_coords - k_coords) + ((k_n - 1).double() * k_ratio).float()
    return rel_pos[relative.long()]


def add_decomposed_rel_pos(attn, q, rel_pos_h, rel_pos_w, q_size, k_size):
    """attn [B, q_h * q_w, k_h * k_w] plus the query's dot products with the height and width
    relative-position embeddings; sizes are ints or, traced from shapes, 0-d tensors."""
    q_h, q_w = q_size
    k_h, k_w = k_size
    Rh, Rw = get_rel_pos(q_h, k_h, rel_pos_h), get_rel_pos(q_w, k_w, rel_pos_w)
    B, _, dim = q.shape
    r_q = q.reshape(B, q_h, q_w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)
    return (attn.view(B, q_h, q_w, k_h, k_w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
            ).view(B, q_h * q_w, k_h * k_w)


def get_abs_pos(abs_pos: torch.Tensor, has_cls_token: bool, hw) -> torch.Tensor:
    """Pre-training position embeddings resized (bicubic) to the token grid, [1, H, W, C]."""
    h, w = hw
    if has_cls_token:
        abs_pos = abs_pos[:, 1:]
    size = int(math.sqrt(abs_pos.shape[1]))
    if size != h or size != w:
        return F.interpolate(abs_pos.reshape(1, size, size, -1).permute(0, 3, 1, 2), size=(h, w), mode="bicubic",
                             align_corners=False).permute(0, 2, 3, 1)
    return abs_pos.reshape(1, h, w, -1)


class PatchEmbed(nn.Module):
    """Strided conv, channels-last output [B, H, W, C] (ViT: kernel = stride = 16; MViT: 7, 4, pad 3)."""

    def __init__(self, patch_size, in_chans: int, embed_dim: int, stride=None, padding=0):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride or patch_size, padding=padding)

    def forward(self, x):
        return self.proj(x).permute(0, 2, 3, 1)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, use_rel_pos: bool, input_size):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x):
        B, H, W, _ = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, B * self.num_heads, H * W, -1).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            attn = add_decomposed_rel_pos(attn, q, self.rel_pos_h, self.rel_pos_w, (H, W), (H, W))
        x = (attn.softmax(dim=-1) @ v).view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return self.proj(x)


class Mlp(nn.Module):
    """timm's Mlp (fc1, GELU, fc2), the names detectron2's ViT checkpoints use."""

    def __init__(self, dim: int, hidden: int, out: Optional[int] = None):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out or dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, norm_eps: float,
                 use_rel_pos: bool, window_size: int, input_size):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, use_rel_pos,
                              input_size if window_size == 0 else (window_size, window_size))
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.window_size = window_size

    def forward(self, x):
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (H, W))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Plain ViT: patch embedding, absolute position embedding (resized), `depth` blocks, window
    attention in `window_block_indexes` and global attention elsewhere. forward -> {out_feature}."""

    size_divisibility = 0

    def __init__(self, *, img_size: int = 1024, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 norm_eps: float = 1e-5, use_abs_pos: bool = True, use_rel_pos: bool = False, window_size: int = 0,
                 window_block_indexes: Sequence[int] = (), pretrain_img_size: int = 224,
                 pretrain_use_cls_token: bool = True, out_feature: str = "last_feat"):
        super().__init__()
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        if use_abs_pos:
            n = (pretrain_img_size // patch_size) ** 2 + (1 if pretrain_use_cls_token else 0)
            self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.pos_embed = None
        grid = (img_size // patch_size, img_size // patch_size)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, norm_eps, use_rel_pos,
                  window_size if i in window_block_indexes else 0, grid) for i in range(depth))
        self.out_feature = out_feature
        self._shapes = {out_feature: ShapeSpec(embed_dim, patch_size)}
        init_linears(self)

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)

    def forward(self, x):
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + get_abs_pos(self.pos_embed, self.pretrain_use_cls_token, (x.shape[1], x.shape[2]))
        for blk in self.blocks:
            x = blk(x)
        return {self.out_feature: x.permute(0, 3, 1, 2)}


class SimpleFeaturePyramid(nn.Module):
    """p2..p5 from the ViT's single stride-16 map (deconvs, identity, max-pool), then the top block (p6).

    `square_pad`: detectron2 pads every image to this square (ViTDet: 1024); it becomes the model's
    `size_divisibility`, so the host pads to square_pad x square_pad.
    """

    def __init__(self, net: nn.Module, in_feature: str, out_channels: int, scale_factors: Sequence[float], *,
                 top_block: Optional[nn.Module] = None, norm: str = "LN", square_pad: int = 0):
        super().__init__()
        shape = net.output_shape()[in_feature]
        strides = [int(shape.stride / s) for s in scale_factors]
        for a, b in zip(strides, strides[1:]):
            if b != 2 * a:
                raise ValueError(f"SimpleFeaturePyramid scale_factors {list(scale_factors)} must halve the stride "
                                 "level by level")
        dim, use_bias = shape.channels, norm == ""
        self._stage_names = []
        for scale, stride in zip(scale_factors, strides):
            out_dim = dim
            if scale == 4.0:
                layers = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), make_norm(norm, dim // 2), nn.GELU(),
                          nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)]
                out_dim = dim // 4
            elif scale == 2.0:
                layers, out_dim = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)], dim // 2
            elif scale == 1.0:
                layers = []
            elif scale == 0.5:
                layers = [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                raise ValueError(f"SimpleFeaturePyramid scale_factor {scale} is not supported (4, 2, 1, 0.5)")
            layers += [Conv2d(out_dim, out_channels, kernel_size=1, bias=use_bias, norm=make_norm(norm, out_channels)),
                       Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=use_bias,
                              norm=make_norm(norm, out_channels))]
            name = f"simfp_{int(math.log2(stride))}"
            self.add_module(name, nn.Sequential(*[m if m is not None else nn.Identity() for m in layers]))
            self._stage_names.append(name)
        self.net, self.in_feature, self.top_block = net, in_feature, top_block
        self._shapes = {f"p{int(math.log2(s))}": ShapeSpec(out_channels, s) for s in strides}
        if top_block is not None:
            last = int(math.log2(strides[-1]))
            for s in range(last, last + top_block.num_levels):
                self._shapes[f"p{s + 1}"] = ShapeSpec(out_channels, 2 ** (s + 1))
        self.size_divisibility = max(int(square_pad), strides[-1])

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)

    def forward(self, x):
        bottom_up = self.net(x)
        features = bottom_up[self.in_feature]
        results = [getattr(self, name)(features) for name in self._stage_names]
        if self.top_block is not None:
            name = self.top_block.in_feature
            names = list(self._shapes)
            results.extend(self.top_block(bottom_up[name] if name in bottom_up else results[names.index(name)]))
        return dict(zip(self._shapes, results))
