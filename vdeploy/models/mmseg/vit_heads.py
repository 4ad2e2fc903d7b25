"""Decode heads of the plain-ViT segmentors (inference only): SETR's progressive upsampling
(SETRUPHead) and multi-level aggregation (SETRMLAHead) heads, and Segmenter's mask transformer
(SegmenterMaskTransformerHead). Names follow mmseg."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .heads import DecodeHead
from .layers import BN, GELU, RELU, Upsample
from .vit import TransformerEncoderLayer, layer_norm


class SETRUPHead(DecodeHead):
    """A LayerNorm over channels, then `num_convs` x (ConvModule, bilinear x`up_scale`)."""

    def __init__(self, in_channels: int, channels, num_classes, *, in_index=-1, num_convs=1, up_scale=4,
                 kernel_size=3, norm_layer: Optional[dict] = None, align_corners=False, input_transform=None,
                 norm=BN, act=RELU):
        super().__init__(channels, num_classes, in_index, align_corners, input_transform=input_transform, norm=norm,
                         act=act)
        if input_transform is not None or not isinstance(in_channels, int):
            raise ValueError("SETRUPHead takes one input feature (no input_transform)")
        if kernel_size not in (1, 3):
            raise ValueError("SETRUPHead: kernel_size must be 1 or 3")
        self.up_convs = nn.ModuleList([
            nn.Sequential(self.conv(in_channels if i == 0 else channels, channels, kernel_size, (kernel_size - 1) // 2),
                          Upsample(up_scale, "bilinear", align_corners)) for i in range(num_convs)])
        # mmseg's name for it; it replaces the ConvModule norm spec, so it comes after the convs
        self.norm = layer_norm(norm_layer or {"type": "LN", "eps": 1e-6}, in_channels)

    def features(self, inputs):
        x = self.select(inputs)
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        for up in self.up_convs:
            x = up(x)
        return x


class SETRMLAHead(DecodeHead):
    """Per level: two 3x3 ConvModules to `mla_channels`, bilinear x`up_scale`; concatenated."""

    def __init__(self, in_channels: Sequence[int], channels, num_classes, *, in_index=(0, 1, 2, 3), mla_channels=128,
                 up_scale=4, align_corners=False, norm=BN, act=RELU):
        super().__init__(channels, num_classes, tuple(in_index), align_corners, input_transform="multiple_select",
                         norm=norm, act=act)
        if channels != len(in_channels) * mla_channels:
            raise ValueError("SETRMLAHead: channels must equal len(in_channels) * mla_channels")
        self.up_convs = nn.ModuleList([
            nn.Sequential(self.conv(c, mla_channels, 3, 1), self.conv(mla_channels, mla_channels, 3, 1),
                          Upsample(up_scale, "bilinear", align_corners)) for c in in_channels])

    def features(self, inputs):
        return torch.cat([up(x) for x, up in zip(self.select(inputs), self.up_convs)], dim=1)


class SegmenterMaskTransformerHead(DecodeHead):
    """Segmenter's decoder: patch tokens projected to `embed_dims`, one learned embedding per
    class appended, transformer layers, LayerNorm; the class masks are the cosine similarities
    of patch and class tokens (after their projections), LayerNorm-ed over classes."""

    def __init__(self, in_channels: int, channels, num_classes, *, num_layers, num_heads, embed_dims, mlp_ratio=4,
                 qkv_bias=True, norm_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None, in_index=-1,
                 align_corners=False, input_transform=None, norm=None, act=None):
        super().__init__(channels, num_classes, in_index, align_corners, input_transform=input_transform,
                         with_conv_seg=False)
        if input_transform is not None or not isinstance(in_channels, int):
            raise ValueError("SegmenterMaskTransformerHead takes one input feature (no input_transform)")
        # its own norm_cfg/act_cfg (LN, GELU by default) are the transformer's, not ConvModules'
        ln = norm_cfg or {"type": "LN"}
        act_cfg = act_cfg or GELU
        self.num_classes = num_classes
        self.layers = nn.ModuleList([TransformerEncoderLayer(embed_dims, num_heads, mlp_ratio * embed_dims, qkv_bias,
                                                             act_cfg, ln) for _ in range(num_layers)])
        self.dec_proj = nn.Linear(in_channels, embed_dims)
        self.cls_emb = nn.Parameter(torch.zeros(1, num_classes, embed_dims))
        self.patch_proj = nn.Linear(embed_dims, embed_dims, bias=False)
        self.classes_proj = nn.Linear(embed_dims, embed_dims, bias=False)
        self.decoder_norm = layer_norm(ln, embed_dims)
        self.mask_norm = layer_norm(ln, num_classes)

    def forward(self, inputs):
        x = self.select(inputs)
        b, _, h, w = x.shape
        x = self.dec_proj(x.flatten(2).transpose(1, 2))
        x = torch.cat([x, self.cls_emb.expand(b, -1, -1)], dim=1)
        for layer in self.layers:
            x = layer(x)
        x = self.decoder_norm(x)
        k = self.num_classes
        patches = F.normalize(self.patch_proj(x[:, :-k]), dim=2, p=2)
        classes = F.normalize(self.classes_proj(x[:, -k:]), dim=2, p=2)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))
        return masks.transpose(1, 2).reshape(b, k, h, w)
