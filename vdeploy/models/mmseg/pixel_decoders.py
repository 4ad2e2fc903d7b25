"""The pixel decoders of MaskFormer and Mask2Former (mmdet 3.x, as mmseg 1.2.2 builds them) at
inference, with mmdet's parameter names.

- `PixelDecoder` (MaskFormer): an FPN over the backbone's levels; returns the mask features and
  the coarsest backbone level as the transformer's memory.
- `MSDeformAttnPixelDecoder` (Mask2Former): the coarsest `num_levels` backbone levels go through
  a deformable-attention transformer encoder, the finer ones through an FPN; returns the mask
  features and the encoder's levels (coarse to fine) for the transformer decoder.

Multi-scale deformable attention is written with `grid_sample` (mmcv's own CPU path,
`multi_scale_deformable_attn_pytorch`), so the graph exports to stock ONNX (GridSample, opset 16+)
and runs on onnxruntime and OpenVINO. Per-level sizes come from the traced shapes, so one graph
serves every input size. Images are never padded inside these graphs: padding masks are all
false and left out.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FFN, ConvModule


def sine_position_encoding(n: int, h, w, num_feats: int, *, like, temperature: float = 10000.0,
                           normalize: bool = True, scale: float = 2 * math.pi, eps: float = 1e-6, offset: float = 0.0):
    """mmdet's SinePositionalEncoding of an all-valid [n, h, w] mask: [n, 2 * num_feats, h, w]
    (y features first, then x; sines and cosines interleaved), on `like`'s device and dtype."""
    y = torch.arange(1, h + 1, dtype=torch.float32, device=like.device)  # the mask's cumulative sum
    x = torch.arange(1, w + 1, dtype=torch.float32, device=like.device)
    if normalize:
        y = (y + offset) / (y[-1:] + eps) * scale
        x = (x + offset) / (x[-1:] + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=like.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)

    def embed(v):
        p = v[:, None] / dim_t
        return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=2).reshape(v.shape[0], num_feats)

    pos_y = embed(y)[:, None, :].expand(-1, x.shape[0], -1)
    pos_x = embed(x)[None, :, :].expand(y.shape[0], -1, -1)
    pos = torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)[None]
    return pos.expand(n, -1, -1, -1).to(like.dtype)


class SinePositionalEncoding(nn.Module):
    """Holds the settings of mmdet's SinePositionalEncoding (no parameters)."""

    def __init__(self, num_feats: int, temperature: float = 10000.0, normalize: bool = False,
                 scale: float = 2 * math.pi, eps: float = 1e-6, offset: float = 0.0):
        super().__init__()
        self.kw = {"num_feats": num_feats, "temperature": temperature, "normalize": normalize, "scale": scale,
                   "eps": eps, "offset": offset}

    def forward(self, x):
        """Encoding for the all-valid mask of a [n, c, h, w] map."""
        return sine_position_encoding(x.shape[0], x.shape[2], x.shape[3], like=x, **self.kw)


class PixelDecoder(nn.Module):
    """mmdet's PixelDecoder: `last_feat_conv` on the coarsest level, then top-down nearest
    upsampling with lateral and output convs; `mask_feature` a 3x3 conv."""

    def __init__(self, in_channels: Sequence[int], feat_channels: int, out_channels: int, *,
                 norm: Optional[dict], act: Optional[dict]):
        super().__init__()
        bias = norm is None
        self.lateral_convs = nn.ModuleList(ConvModule(c, feat_channels, 1, norm=norm, act=None, bias=bias)
                                           for c in in_channels[:-1])
        self.output_convs = nn.ModuleList(ConvModule(feat_channels, feat_channels, 3, 1, 1, norm=norm, act=act,
                                                     bias=bias) for _ in in_channels[:-1])
        self.last_feat_conv = ConvModule(in_channels[-1], feat_channels, 3, 1, 1, norm=norm, act=act, bias=bias)
        self.mask_feature = nn.Conv2d(feat_channels, out_channels, 3, 1, 1)

    def forward(self, feats):
        y = self.last_feat_conv(feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.lateral_convs[i](feats[i])
            y = self.output_convs[i](lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest"))
        return self.mask_feature(y), feats[-1]


class MultiScaleDeformableAttention(nn.Module):
    """mmcv's MultiScaleDeformableAttention (batch first) with 2-d reference points, no padding
    mask. Returns identity + attention."""

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 4, num_points: int = 4):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f"embed_dims {embed_dims} is not divisible by num_heads {num_heads}")
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, query, query_pos, reference_points, shapes):
        """query [n, L, C] (the levels' tokens concatenated, coarse first), reference_points
        [n, L, levels, 2] in (x, y) fractions, shapes: the levels' (h, w) from traced shapes."""
        n, lq, c = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(query)
        q = query + query_pos
        offsets = self.sampling_offsets(q).view(n, lq, heads, levels, points, 2)
        weights = self.attention_weights(q).view(n, lq, heads, levels * points).softmax(-1)
        weights = weights.view(n, lq, heads, levels, points)
        sampled, start = [], 0
        for level, (h, w, wh) in enumerate(shapes):
            locations = reference_points[:, :, None, level, None, :] + offsets[:, :, :, level] / wh.to(query.dtype)
            grid = (2 * locations - 1).transpose(1, 2).flatten(0, 1)  # [n * heads, L, points, 2]
            v = value[:, start:start + h * w].reshape(n, h * w, heads, c // heads)
            v = v.permute(0, 2, 3, 1).reshape(n * heads, c // heads, h, w)
            sampled.append(F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
            start = start + h * w
        # [n * heads, C/heads, L, levels * points] weighted over the sampled points
        attn = weights.transpose(1, 2).reshape(n * heads, 1, lq, levels * points)
        out = (torch.stack(sampled, dim=-2).flatten(-2) * attn).sum(-1).view(n, c, lq).transpose(1, 2)
        return query + self.output_proj(out)


class DeformableEncoderLayer(nn.Module):
    """mmdet's DeformableDetrTransformerEncoderLayer (post-norm): attention, norm, FFN, norm."""

    def __init__(self, embed_dims: int, num_heads: int, num_levels: int, num_points: int,
                 feedforward_channels: int, act: dict):
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(embed_dims, num_heads, num_levels, num_points)
        self.ffn = FFN(embed_dims, feedforward_channels, act=act)
        self.norms = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(2))

    def forward(self, query, query_pos, reference_points, shapes):
        query = self.norms[0](self.self_attn(query, query_pos, reference_points, shapes))
        return self.norms[1](self.ffn(query))


class DeformableEncoder(nn.Module):
    def __init__(self, num_layers: int, **layer_kw):
        super().__init__()
        self.layers = nn.ModuleList(DeformableEncoderLayer(**layer_kw) for _ in range(num_layers))

    def forward(self, query, query_pos, reference_points, shapes):
        for layer in self.layers:
            query = layer(query, query_pos, reference_points, shapes)
        return query


class MSDeformAttnPixelDecoder(nn.Module):
    """mmdet's MSDeformAttnPixelDecoder. `encoder` holds the encoder layer's settings
    (num_layers, embed_dims, num_heads, num_levels, num_points, feedforward_channels, act)."""

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], feat_channels: int, out_channels: int,
                 num_outs: int, *, norm: Optional[dict], act: Optional[dict], encoder: dict, positional_encoding: dict):
        super().__init__()
        n_in, n_enc = len(in_channels), int(encoder["num_levels"])
        if not 1 <= n_enc <= n_in or len(strides) != n_in:
            raise ValueError(f"pixel decoder: {n_enc} encoder levels, {n_in} inputs and {len(strides)} strides "
                             "do not fit")
        self.strides, self.num_encoder_levels, self.num_outs = tuple(strides), n_enc, num_outs
        # coarse to fine: input_convs[i] takes level n_in - 1 - i
        self.input_convs = nn.ModuleList(ConvModule(in_channels[n_in - 1 - i], feat_channels, 1, norm=norm, act=None,
                                                    bias=True) for i in range(n_enc))
        self.encoder = DeformableEncoder(**encoder)
        self.postional_encoding = SinePositionalEncoding(**positional_encoding)  # mmdet's spelling
        self.level_encoding = nn.Embedding(n_enc, feat_channels)
        bias = norm is None
        # mmdet appends these coarse to fine but indexes them by level in forward(); kept as it is
        # so that checkpoints load and compute alike
        fpn_levels = range(n_in - n_enc - 1, -1, -1)
        self.lateral_convs = nn.ModuleList(ConvModule(in_channels[i], feat_channels, 1, norm=norm, act=None, bias=bias)
                                           for i in fpn_levels)
        self.output_convs = nn.ModuleList(ConvModule(feat_channels, feat_channels, 3, 1, 1, norm=norm, act=act,
                                                     bias=bias) for _ in fpn_levels)
        self.mask_feature = nn.Conv2d(feat_channels, out_channels, 1)

    def forward(self, feats):
        n_in = len(feats)
        tokens, pos, refs, shapes = [], [], [], []
        for i in range(self.num_encoder_levels):
            level = n_in - 1 - i
            feat = feats[level]
            h, w = feat.shape[2], feat.shape[3]
            wh = torch._shape_as_tensor(feat)[2:].flip(0)  # a tensor, so that the ONNX trace keeps it symbolic
            projected = self.input_convs[i](feat)
            level_pos = self.postional_encoding(feat) + self.level_encoding.weight[i].view(1, -1, 1, 1)
            stride = self.strides[level]
            # mmdet's MlvlPointGenerator centres ((x + 0.5) * stride) over (w * stride)
            xs = (torch.arange(w, device=feat.device) + 0.5) * stride
            ys = (torch.arange(h, device=feat.device) + 0.5) * stride
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            factor = (wh * stride).to(feat.device)
            refs.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1) / factor)
            tokens.append(projected.flatten(2).transpose(1, 2))
            pos.append(level_pos.flatten(2).transpose(1, 2))
            shapes.append((h, w, wh))
        n = feats[0].shape[0]
        ref = torch.cat(refs, 0)[None, :, None].expand(n, -1, self.num_encoder_levels, -1).to(feats[0].dtype)
        memory = self.encoder(torch.cat(tokens, 1), torch.cat(pos, 1), ref, shapes).transpose(1, 2)
        outs, start = [], 0
        for h, w, _ in shapes:
            outs.append(memory[:, :, start:start + h * w].reshape(n, -1, h, w))
            start = start + h * w
        for i in range(n_in - self.num_encoder_levels - 1, -1, -1):
            lateral = self.lateral_convs[i](feats[i])
            y = lateral + F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(self.output_convs[i](y))
        return self.mask_feature(outs[-1]), outs[:self.num_outs]
