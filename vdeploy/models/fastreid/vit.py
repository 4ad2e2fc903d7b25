"""fast-reid's Vision Transformer backbone (`build_vit_backbone`), inference path only.

Patches are cut by a conv whose stride is MODEL.BACKBONE.STRIDE_SIZE (overlapping when smaller
than the 16-pixel patch); the position embedding is sized for INPUT.SIZE_TRAIN, which is why the
input must have that size. The output is the class token after the final LayerNorm, shaped
[N, 768, 1, 1] for the embedding head. fast-reid builds it without camera embeddings (SIE), and
dropout / drop-path are identities at inference.

Parameter names follow fast-reid's so that its checkpoints load without renaming.
"""
from __future__ import annotations

import torch
from torch import nn

# fast-reid's two sizes: (blocks, heads, mlp ratio, qkv bias, qk scale or None for head_dim ** -0.5)
VARIANTS = {"small": (8, 8, 3.0, False, 768 ** -0.5), "base": (12, 12, 4.0, True, None)}
EMBED_DIM = 768


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, qk_scale):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, qk_scale):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_scale)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, stride, dim, patch: int = 16):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    def __init__(self, img_size=(256, 128), depth: str = "base", stride_size=(16, 16), patch: int = 16):
        super().__init__()
        if depth not in VARIANTS:
            raise ValueError(f"unsupported ViT depth {depth!r}; expected one of {sorted(VARIANTS)}")
        blocks, heads, mlp_ratio, qkv_bias, qk_scale = VARIANTS[depth]
        sy, sx = stride_size
        num_patches = ((img_size[0] - patch) // sy + 1) * ((img_size[1] - patch) // sx + 1)
        self.img_size = tuple(img_size)
        self.patch_embed = PatchEmbed((sy, sx), EMBED_DIM, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, EMBED_DIM))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, EMBED_DIM))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(Block(EMBED_DIM, heads, mlp_ratio, qkv_bias, qk_scale) for _ in range(blocks))
        self.norm = nn.LayerNorm(EMBED_DIM, eps=1e-6)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 0].reshape(x.shape[0], -1, 1, 1)
