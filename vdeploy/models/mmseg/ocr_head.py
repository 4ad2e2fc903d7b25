"""MMSegmentation's OCRHead (OCRNet), the second head of a CascadeEncoderDecoder: it refines
the first head's logits with object-contextual representations. Per class, a region feature
is the softmax(over pixels)-weighted mean of the pixel features; each pixel then attends to
the class regions (mmseg's ObjectAttentionBlock) and the result is fused with the pixel
feature.
"""
from __future__ import annotations

import torch

from .attention_heads import SelfAttentionBlock
from .heads import DecodeHead, in_channels_of
from .layers import BN, RELU, ConvModule


class ObjectAttentionBlock(SelfAttentionBlock):
    def __init__(self, in_channels, channels, norm, act):
        super().__init__(in_channels, in_channels, channels, in_channels, key_query_num_convs=2, key_query_norm=True,
                         value_out_norm=True, matmul_norm=True, with_out=True, norm=norm, act=act)
        self.bottleneck = ConvModule(in_channels * 2, in_channels, 1, norm=norm, act=act)

    def forward(self, query_feats, key_feats):
        context = super().forward(query_feats, key_feats)
        return self.bottleneck(torch.cat([context, query_feats], dim=1))


def spatial_gather(feats, probs, scale: float = 1.0):
    """Class region features [N, C, K, 1]: per class, pixel features weighted by the softmax of
    its scores over all pixels (mmseg's SpatialGatherModule)."""
    n, k = probs.shape[:2]
    weights = torch.softmax(scale * probs.reshape(n, k, -1), dim=2)
    context = torch.matmul(weights, feats.flatten(2).transpose(1, 2))  # [N, K, C]
    return context.transpose(1, 2).unsqueeze(3)


class OCRHead(DecodeHead):
    """forward(inputs, prev_output): `prev_output` are the previous head's logits."""

    def __init__(self, in_channels, channels, num_classes, *, ocr_channels, scale=1, in_index=-1,
                 align_corners=False, input_transform=None, norm=BN, act=RELU):
        super().__init__(channels, num_classes, in_index, align_corners, input_transform=input_transform, norm=norm,
                         act=act)
        if scale != 1:
            # mmseg's scale > 1 path calls resize() without a size and fails; nothing to match
            raise ValueError("OCRHead: only scale=1 is supported")
        self.scale = scale
        self.object_context_block = ObjectAttentionBlock(channels, ocr_channels, norm, act)
        self.bottleneck = self.conv(in_channels_of(in_channels, input_transform), channels, 3, 1)

    def forward(self, inputs, prev_output):
        feats = self.bottleneck(self.select(inputs))
        context = spatial_gather(feats, prev_output, self.scale)
        return self.conv_seg(self.object_context_block(feats, context))
