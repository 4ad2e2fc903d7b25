"""The necks that turn a plain ViT's single-scale features into a pyramid (inference only):
MultiLevelNeck (UPerNet-ViT), MLANeck (SETR-MLA) and Feature2Pyramid (BEiT, MAE).
Names follow mmseg (`lateral_convs`, `convs`, `mla.channel_proj`, `upsample_4x`)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch.nn.functional as F
from torch import nn

from .layers import ConvModule, norm_layer
from .vit import layer_norm


class MultiLevelNeck(nn.Module):
    """1x1 laterals, each level resized by its `scales` entry (bilinear, by scale factor as mmseg
    does, so odd sizes round down the same way), then a 3x3 conv."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, scales: Sequence[float] = (0.5, 1, 2, 4), *,
                 norm: Optional[dict] = None, act: Optional[dict] = None):
        super().__init__()
        if len(in_channels) not in (1, len(scales)):
            raise ValueError("MultiLevelNeck: in_channels needs one entry or one per scale")
        self.scales = tuple(float(s) for s in scales)
        self.lateral_convs = nn.ModuleList([ConvModule(c, out_channels, 1, norm=norm, act=act) for c in in_channels])
        self.convs = nn.ModuleList([ConvModule(out_channels, out_channels, 3, 1, 1, norm=norm, act=act)
                                    for _ in self.scales])

    def forward(self, inputs):
        feats = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        if len(feats) == 1:
            feats = feats * len(self.scales)
        return tuple(conv(F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False))
                     for x, s, conv in zip(feats, self.scales, self.convs))


class MLAModule(nn.Module):
    def __init__(self, in_channels, out_channels, norm, act):
        super().__init__()
        self.channel_proj = nn.ModuleList([ConvModule(c, out_channels, 1, norm=norm, act=act) for c in in_channels])
        self.feat_extract = nn.ModuleList([ConvModule(out_channels, out_channels, 3, 1, 1, norm=norm, act=act)
                                           for _ in in_channels])

    def forward(self, inputs):
        # top-down running sum from the deepest level; outputs stay in that (deepest-first) order
        feats = [conv(x) for x, conv in zip(inputs, self.channel_proj)][::-1]
        running, outs = None, []
        for feat, conv in zip(feats, self.feat_extract):
            running = feat if running is None else running + feat
            outs.append(conv(running))
        return tuple(outs)


class MLANeck(nn.Module):
    """SETR's multi-level aggregation: a LayerNorm per level over channels, 1x1 projections,
    top-down cumulative sums, 3x3 convs."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, *, norm_layer: Optional[dict] = None,
                 norm: Optional[dict] = None, act: Optional[dict] = None):
        super().__init__()
        ln = norm_layer or {"type": "LN", "eps": 1e-6}
        self.norm = nn.ModuleList([layer_norm(ln, c) for c in in_channels])
        self.mla = MLAModule(in_channels, out_channels, norm, act)

    def forward(self, inputs):
        feats = [ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) for x, ln in zip(inputs, self.norm)]
        return self.mla(feats)


class Feature2Pyramid(nn.Module):
    """BEiT's pyramid from four same-size maps: 4x up (deconv, BN, GELU, deconv), 2x up (deconv),
    identity, 2x down (max-pool); or, without a 4x entry, 2x up, identity, 2x and 4x down."""

    def __init__(self, embed_dim: int, rescales: Sequence[float] = (4, 2, 1, 0.5), *, norm: Optional[dict] = None):
        super().__init__()
        rescales = tuple(rescales)
        if rescales not in ((4, 2, 1, 0.5), (2, 1, 0.5, 0.25)):
            raise ValueError(f"Feature2Pyramid: rescales {rescales} must be (4, 2, 1, 0.5) or (2, 1, 0.5, 0.25)")
        norm = norm or {"type": "BN"}
        self.four = rescales[0] == 4
        if self.four:
            self.upsample_4x = nn.Sequential(nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2),
                                             norm_layer(norm, embed_dim), nn.GELU(),
                                             nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2))
        self.upsample_2x = nn.Sequential(nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2))

    def forward(self, inputs):
        if self.four:
            ops = [self.upsample_4x, self.upsample_2x, None, lambda x: F.max_pool2d(x, 2, 2)]
        else:
            ops = [self.upsample_2x, None, lambda x: F.max_pool2d(x, 2, 2), lambda x: F.max_pool2d(x, 4, 4)]
        return tuple(x if op is None else op(x) for x, op in zip(inputs, ops))
