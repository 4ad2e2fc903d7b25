"""MMSegmentation 1.2.2's MaskFormerHead and Mask2FormerHead (mmdet 3.x heads with mmseg's
semantic inference) at inference, with mmdet's parameter names.

Both predict `num_queries` (class scores over num_classes + 1 "no object", mask logits at the
pixel decoder's finest level) and turn them into per-class scores the way mmseg's `predict`
does: masks resized to the network input's size (bilinear), sigmoid, then
`einsum(softmax(class scores)[..., :-1], masks)`. The sigmoid comes after the resize, so these
heads take the input's size and return scores at that size (`takes_input_size`).

Mask2Former's decoder attends, at every layer, only where the previous layer's mask of each
query is positive on the level it reads (`sigmoid < 0.5` is blocked; a query blocked everywhere
attends everywhere), cycling through the pixel decoder's levels coarse to fine. Only the last
layer's predictions are returned; the earlier layers' masks are computed for their attention
masks only.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FFN, _TorchMHAWeights
from .pixel_decoders import MSDeformAttnPixelDecoder, PixelDecoder, SinePositionalEncoding


def attention(query, key, value, weights: _TorchMHAWeights, num_heads: int, blocked=None):
    """torch's multi-head attention (batch first) with a boolean mask [n, 1 or heads, Lq, Lk]
    where True is not attended (as nn.MultiheadAttention's attn_mask)."""
    n, lq, c = query.shape
    d = c // num_heads
    wq, wk, wv = weights.in_proj_weight.chunk(3)
    bq, bk, bv = weights.in_proj_bias.chunk(3) if weights.in_proj_bias is not None else (None, None, None)
    q = F.linear(query, wq, bq).reshape(n, lq, num_heads, d).transpose(1, 2)
    k = F.linear(key, wk, bk).reshape(n, -1, num_heads, d).transpose(1, 2)
    v = F.linear(value, wv, bv).reshape(n, -1, num_heads, d).transpose(1, 2)
    scores = torch.matmul(q * d ** -0.5, k.transpose(-2, -1))
    if blocked is not None:
        scores = scores.masked_fill(blocked, float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(n, lq, c)
    return weights.out_proj(out)


class PositionedAttention(nn.Module):
    """mmcv's MultiheadAttention as the DETR decoders call it: positions added to query and key
    (not to the value), identity + attention returned."""

    def __init__(self, embed_dims: int, num_heads: int):
        super().__init__()
        self.attn = _TorchMHAWeights(embed_dims)
        self.num_heads = num_heads

    def forward(self, query, key, value, query_pos, key_pos, blocked=None):
        return query + attention(query + query_pos, key + key_pos, value, self.attn, self.num_heads, blocked)


class QueryDecoderLayer(nn.Module):
    """mmdet's DetrTransformerDecoderLayer (self-attention first: MaskFormer) or
    Mask2FormerTransformerDecoderLayer (cross-attention first), post-norm."""

    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int, act: dict, cross_first: bool):
        super().__init__()
        self.self_attn = PositionedAttention(embed_dims, num_heads)
        self.cross_attn = PositionedAttention(embed_dims, num_heads)
        self.ffn = FFN(embed_dims, feedforward_channels, act=act)
        self.norms = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(3))
        self.cross_first = cross_first

    def forward(self, query, memory, query_pos, memory_pos, blocked=None):
        def self_attn(q):
            return self.self_attn(q, q, q, query_pos, query_pos)

        def cross_attn(q):
            return self.cross_attn(q, memory, memory, query_pos, memory_pos, blocked)

        first, second = (cross_attn, self_attn) if self.cross_first else (self_attn, cross_attn)
        query = self.norms[0](first(query))
        query = self.norms[1](second(query))
        return self.norms[2](self.ffn(query))


class QueryDecoder(nn.Module):
    def __init__(self, num_layers: int, embed_dims: int, **layer_kw):
        super().__init__()
        self.layers = nn.ModuleList(QueryDecoderLayer(embed_dims, **layer_kw) for _ in range(num_layers))
        self.post_norm = nn.LayerNorm(embed_dims)


def _mask_embed(feat_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(feat_channels, feat_channels), nn.ReLU(), nn.Linear(feat_channels, feat_channels),
                         nn.ReLU(), nn.Linear(feat_channels, out_channels))


def semantic_scores(cls_logits, mask_logits, size):
    """mmseg's semantic inference of query predictions: [n, num_classes, *size]."""
    masks = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False).sigmoid()
    probs = torch.softmax(cls_logits, dim=-1)[..., :-1]
    return torch.einsum("bqc,bqhw->bchw", probs, masks)


class MaskFormerHead(nn.Module):
    """mmseg's MaskFormerHead: PixelDecoder, DETR decoder over the coarsest backbone level."""
    takes_input_size = True

    def __init__(self, in_channels: Sequence[int], feat_channels: int, out_channels: int, num_classes: int, *,
                 num_queries: int, pixel_decoder: dict, decoder: dict, positional_encoding: dict,
                 enforce_decoder_input_project: bool = False, align_corners: bool = False):
        super().__init__()
        self.pixel_decoder = PixelDecoder(in_channels, feat_channels, out_channels, **pixel_decoder)
        self.transformer_decoder = QueryDecoder(cross_first=False, **decoder)
        embed = decoder["embed_dims"]
        self.decoder_input_proj = nn.Conv2d(in_channels[-1], embed, 1) \
            if embed != in_channels[-1] or enforce_decoder_input_project else nn.Identity()
        self.decoder_pe = SinePositionalEncoding(**positional_encoding)
        self.query_embed = nn.Embedding(num_queries, out_channels)
        self.cls_embed = nn.Linear(feat_channels, num_classes + 1)
        self.mask_embed = _mask_embed(feat_channels, out_channels)
        self.align_corners = align_corners

    def forward(self, feats, size):
        mask_features, memory = self.pixel_decoder(feats)
        n = memory.shape[0]
        pos = self.decoder_pe(memory).flatten(2).transpose(1, 2)
        memory = self.decoder_input_proj(memory).flatten(2).transpose(1, 2)
        query_pos = self.query_embed.weight[None].expand(n, -1, -1)
        query = torch.zeros_like(query_pos)
        for layer in self.transformer_decoder.layers:
            query = layer(query, memory, query_pos, pos)
        query = self.transformer_decoder.post_norm(query)
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(query), mask_features)
        return semantic_scores(self.cls_embed(query), mask_logits, size)


class Mask2FormerHead(nn.Module):
    """mmseg's Mask2FormerHead: MSDeformAttnPixelDecoder, masked-attention decoder."""
    takes_input_size = True

    def __init__(self, in_channels: Sequence[int], feat_channels: int, out_channels: int, num_classes: int, *,
                 num_queries: int, num_transformer_feat_level: int, pixel_decoder: dict, decoder: dict,
                 positional_encoding: dict, enforce_decoder_input_project: bool = False, align_corners: bool = False):
        super().__init__()
        self.pixel_decoder = MSDeformAttnPixelDecoder(in_channels, feat_channels=feat_channels,
                                                      out_channels=out_channels, **pixel_decoder)
        self.transformer_decoder = QueryDecoder(cross_first=True, **decoder)
        embed = decoder["embed_dims"]
        self.num_levels = num_transformer_feat_level
        self.num_heads = decoder["num_heads"]
        self.decoder_input_projs = nn.ModuleList(
            nn.Conv2d(feat_channels, embed, 1) if embed != feat_channels or enforce_decoder_input_project
            else nn.Identity() for _ in range(num_transformer_feat_level))
        self.decoder_positional_encoding = SinePositionalEncoding(**positional_encoding)
        self.query_embed = nn.Embedding(num_queries, feat_channels)
        self.query_feat = nn.Embedding(num_queries, feat_channels)
        self.level_embed = nn.Embedding(num_transformer_feat_level, feat_channels)
        self.cls_embed = nn.Linear(feat_channels, num_classes + 1)
        self.mask_embed = _mask_embed(feat_channels, out_channels)
        self.align_corners = align_corners

    def _masks(self, query, mask_features):
        query = self.transformer_decoder.post_norm(query)
        return query, torch.einsum("bqc,bchw->bqhw", self.mask_embed(query), mask_features)

    @staticmethod
    def _blocked(mask_logits, level):
        """Where each query does not attend on `level`: [n, 1, Q, h*w], heads broadcast."""
        m = F.interpolate(mask_logits, size=level.shape[-2:], mode="bilinear", align_corners=False)
        blocked = m.flatten(2).sigmoid() < 0.5
        everywhere = blocked.all(dim=-1, keepdim=True)
        return (blocked & ~everywhere)[:, None]

    def forward(self, feats, size):
        mask_features, levels = self.pixel_decoder(feats)
        n = mask_features.shape[0]
        memories, positions = [], []
        for i in range(self.num_levels):
            memories.append(self.decoder_input_projs[i](levels[i]).flatten(2).transpose(1, 2)
                            + self.level_embed.weight[i].view(1, 1, -1))
            positions.append(self.decoder_positional_encoding(levels[i]).flatten(2).transpose(1, 2))
        query = self.query_feat.weight[None].expand(n, -1, -1)
        query_pos = self.query_embed.weight[None].expand(n, -1, -1)
        _, mask_logits = self._masks(query, mask_features)
        for i, layer in enumerate(self.transformer_decoder.layers):
            lvl = i % self.num_levels
            query = layer(query, memories[lvl], query_pos, positions[lvl], self._blocked(mask_logits, levels[lvl]))
            normed, mask_logits = self._masks(query, mask_features)
        return semantic_scores(self.cls_embed(normed), mask_logits, size)

