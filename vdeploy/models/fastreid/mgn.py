"""fast-reid's `MGN` meta-architecture (Multiple Granularity Network), inference path only.

A shared trunk (ResNet stem, stages 1-2 and the first block of stage 3) feeds three branches, each
with its own copy of the rest of stage 3 and a stage 4: branch 1 the backbone's own stage 4
(global), branches 2 and 3 a stride-1 stage 4 that is cut into 2 and 3 horizontal stripes. Eight
embedding heads (one per branch and per stripe) pool and project; the test-time output is their
concatenation in fast-reid's order: b1, b2, b3, b21, b22, b31, b32, b33.

Module names follow fast-reid's (`backbone.N`, `b1.0`, `b2.1`, `b21_head`, ...) so that its
checkpoints load without renaming.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .baseline import EmbeddingHead
from .layers import make_norm
from .resnet import Bottleneck, ResNet

HEADS = ("b1_head", "b2_head", "b3_head", "b21_head", "b22_head", "b31_head", "b32_head", "b33_head")


class MGN(nn.Module):
    """images: float32 [N, 3, H, W], RGB, 0-255 -> (features [N, 8 * D],)."""

    def __init__(self, resnet: ResNet, make_head, norm: str, with_se: bool, pixel_mean, pixel_std):
        super().__init__()
        if not isinstance(resnet.layer4[0], Bottleneck):
            raise ValueError("MODEL.BACKBONE.DEPTH below 50x is not supported with MGN (it needs bottleneck blocks)")
        self.backbone = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                      resnet.layer1, resnet.layer2, resnet.layer3[0])
        res_conv4 = nn.Sequential(*resnet.layer3[1:])
        # The part branches' stage 4 never strides, whatever LAST_STRIDE says, and has no IBN.
        res_p_conv5 = nn.Sequential(
            Bottleneck(1024, 512, norm, False, with_se, downsample=nn.Sequential(
                nn.Conv2d(1024, 2048, 1, bias=False), make_norm(norm, 2048))),
            Bottleneck(2048, 512, norm, False, with_se),
            Bottleneck(2048, 512, norm, False, with_se))
        self.b1 = nn.Sequential(copy.deepcopy(res_conv4), resnet.layer4)
        self.b2 = nn.Sequential(copy.deepcopy(res_conv4), copy.deepcopy(res_p_conv5))
        self.b3 = nn.Sequential(res_conv4, res_p_conv5)
        for name in HEADS:
            setattr(self, name, make_head())
        self.out_dim = len(HEADS) * self.b1_head.out_dim
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1), False)

    def forward(self, images):
        x = self.backbone((images - self.pixel_mean) / self.pixel_std)
        b1 = self.b1(x)
        b2 = self.b2(x)
        b3 = self.b3(x)
        # Stripes along the height, with torch.chunk's sizes (ceil(H / k), the last one shorter).
        b21, b22 = torch.chunk(b2, 2, dim=2)
        b31, b32, b33 = torch.chunk(b3, 3, dim=2)
        feats = [self.b1_head(b1), self.b2_head(b2), self.b3_head(b3), self.b21_head(b21),
                 self.b22_head(b22), self.b31_head(b31), self.b32_head(b32), self.b33_head(b33)]
        return (torch.cat(feats, dim=1),)


def build_mgn(resnet: ResNet, head_kwargs: dict, norm: str, with_se: bool, pixel_mean, pixel_std) -> MGN:
    return MGN(resnet, lambda: EmbeddingHead(**head_kwargs), norm, with_se, pixel_mean, pixel_std)
