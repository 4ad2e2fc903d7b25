"""The parts of Stable Diffusion v1's denoising UNet (CompVis `ldm`'s openaimodel.UNetModel with
spatial transformers) that MMSegmentation's VPD runs, written without ldm.

Module and parameter names are ldm's (`time_embed.0`, `input_blocks.1.0.in_layers.0`,
`input_blocks.1.1.transformer_blocks.0.attn1.to_q`, `middle_block.1.proj_in`,
`output_blocks.5.2.conv`, ...), so that the UNet weights of an mmseg VPD checkpoint load
unchanged. The final `out` layers (norm, SiLU, conv to the noise prediction) are not built:
VPD reads the output blocks' features and never the noise estimate.

Inference only: dropout and gradient checkpointing do nothing at inference and are left out.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [N, dim] of timesteps [N]: cosines then sines of t * max_period^(-i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class GroupNorm32(nn.GroupNorm):
    """ldm's `normalization`: 32 groups, computed in float32 whatever the input's precision."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with the timestep embedding added in between, and a skip connection
    (a 1x1 convolution when the channel count changes)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int):
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        # index 2 is ldm's Dropout: kept so that the last convolution is `out_layers.3`
        self.out_layers = nn.Sequential(GroupNorm32(out_channels), nn.SiLU(), nn.Identity(),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class CrossAttention(nn.Module):
    """Multi-head attention of `x` [B, N, query_dim] over `context` [B, M, context_dim] (over
    `x` itself when no context is given); no bias on the projections, as in ldm."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Identity())  # [1] is ldm's Dropout

    def _split(self, t):
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, -1).transpose(1, 2)  # [B, heads, N, dim_head]

    def forward(self, x, context=None):
        context = x if context is None else context
        q, k, v = self._split(self.to_q(x)), self._split(self.to_k(context)), self._split(self.to_v(context))
        # softmax(q k^T / sqrt(dim_head)) v; torch's fused kernel keeps the 4096 x 4096 maps of
        # SD's first level out of memory (ldm writes them out: the same values to float rounding)
        out = F.scaled_dot_product_attention(q, k, v)
        b, _, n, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class GEGLU(nn.Module):
    """A linear layer to twice the width whose second half, through GELU, gates the first."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        # `net.0` GEGLU, `net.1` ldm's Dropout, `net.2` the projection back
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention over the context, gated feed-forward; pre-norm residuals."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x, context):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Feature map -> tokens (1x1 convolution in) -> transformer blocks -> feature map (1x1
    convolution out), added to the input."""

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int, context_dim: int):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth)])
        self.proj_out = nn.Conv2d(inner, channels, 1)

    def forward(self, x, context):
        b, c, h, w = x.shape
        t = self.proj_in(self.norm(x))
        t = t.flatten(2).transpose(1, 2)  # [B, HW, inner]
        for block in self.transformer_blocks:
            t = block(t, context)
        t = t.transpose(1, 2).reshape(b, -1, h, w)
        return self.proj_out(t) + x


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    """ldm's block container: residual blocks also take the timestep embedding, transformers the
    context, anything else the features alone."""

    def forward(self, x, emb, context):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class UNetModel(nn.Module):
    """SD v1's UNet without its output head.

    `channel_mult` levels of `num_res_blocks` residual blocks each (a spatial transformer after
    each where the level's downsampling factor is in `attention_resolutions`), a 3x3-conv
    downsampling between levels; a middle block; the mirrored decoder of `num_res_blocks + 1`
    blocks per level, each taking the matching encoder output concatenated, upsampling (nearest
    x2 + 3x3 conv) at the end of every level but the finest. Attention heads: `num_heads` of
    `channels // num_heads` channels.
    """

    def __init__(self, *, in_channels: int, model_channels: int, num_res_blocks: int,
                 attention_resolutions: Sequence[int], channel_mult: Sequence[int], num_heads: int,
                 transformer_depth: int, context_dim: int):
        super().__init__()
        self.model_channels = model_channels
        self.levels = len(channel_mult)
        emb_dim = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def transformer(ch):
            return SpatialTransformer(ch, num_heads, ch // num_heads, transformer_depth, context_dim)

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, model_channels, 3,
                                                                             padding=1))])
        skips = [model_channels]  # channels of every input block's output, for the decoder's concatenations
        ch, ds = model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, emb_dim, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(transformer(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skips.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(ResBlock(ch, emb_dim, ch), transformer(ch),
                                                    ResBlock(ch, emb_dim, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), emb_dim, model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(transformer(ch))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

    def features(self, x, timesteps, context, taps: Sequence[int]) -> list:
        """The outputs of the output blocks numbered in `taps`, then that of the last one."""
        if not torch.jit.is_tracing():
            multiple = 2 ** (self.levels - 1)
            if x.shape[-2] % multiple or x.shape[-1] % multiple:
                # the decoder concatenates each upsampled map with the encoder's map of the same level
                raise ValueError(f"the UNet's input {tuple(x.shape[-2:])} must be a multiple of {multiple} "
                                 f"(of {8 * multiple} pixels in the image)")
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips.append(h)
        h = self.middle_block(h, emb, context)
        out = []
        for i, block in enumerate(self.output_blocks):
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
            if i in taps:
                out.append(h)
        out.append(h)
        return out
