"""fast-reid's `Baseline` meta-architecture with its `EmbeddingHead`, inference path only."""
from __future__ import annotations

import torch
from torch import nn

from .layers import make_norm, make_pool
from .resnet import ResNet


class EmbeddingHead(nn.Module):
    """Pool, then the "neck": optional 1x1 conv to `embedding_dim`, optional BNNeck.

    At test time fast-reid always returns the neck's output; `NECK_FEAT` ("before"/"after")
    only selects which feature the training losses see, so it does not appear here.
    """

    def __init__(self, feat_dim: int = 2048, embedding_dim: int = 0, pool: str = "GlobalAvgPool",
                 with_bnneck: bool = True, norm: str = "BN"):
        super().__init__()
        self.pool_layer = make_pool(pool)
        # fast-reid returns neck[..., 0, 0]; every pool but Identity leaves 1x1 there
        self.first_pixel_only = pool == "Identity"
        neck: list[nn.Module] = []
        if embedding_dim > 0:
            neck.append(nn.Conv2d(feat_dim, embedding_dim, 1, 1, bias=False))
            feat_dim = embedding_dim
        if with_bnneck:
            neck.append(make_norm(norm, feat_dim))
        self.bottleneck = nn.Sequential(*neck)
        self.out_dim = feat_dim

    def forward(self, features):
        neck = self.bottleneck(self.pool_layer(features))
        if self.first_pixel_only:
            return neck[:, :, 0, 0]
        # a Flatten of the 1x1 map, not [:, :, 0, 0]: for those two scalar Gathers after an int8 (NNCF)
        # pooling layer OpenVINO's CPU plugin returned (N, C, C, 1) where its IR declares (N, C)
        return torch.flatten(neck, 1)


class ReidBaseline(nn.Module):
    """images: float32 [N, 3, H, W], RGB, 0-255 -> (features [N, D],).

    Normalisation with PIXEL_MEAN / PIXEL_STD happens inside the graph, as in fast-reid.
    """

    def __init__(self, backbone: ResNet, heads: EmbeddingHead, pixel_mean, pixel_std):
        super().__init__()
        self.backbone = backbone
        self.heads = heads
        self.out_dim = heads.out_dim
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1), False)

    def forward(self, images):
        x = (images - self.pixel_mean) / self.pixel_std
        return (self.heads(self.backbone(x)),)
