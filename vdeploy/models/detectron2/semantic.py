"""detectron2's semantic FPN head and the meta architectures around it, at inference:
SemanticSegmentor (semantic FPN), PanopticFPN (Mask R-CNN + semantic head) and ProposalNetwork
(RPN only).

What detectron2 does after the graph (cropping and resizing the semantic logits to the image,
pasting masks, and PanopticFPN's combination of instances and semantic labels) needs the
original image size and is done on the host (vdeploy.runtime.postprocess).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .rcnn import GeneralizedRCNN
from .resnet import Conv2d, make_norm


class SemSegFPNHead(nn.Module):
    """Per input level: 3x3 conv (+ norm + ReLU) and 2x bilinear upsample, repeated until the level
    reaches `common_stride` (at least one conv); the levels are summed, a 1x1 `predictor` gives the
    class logits, and a bilinear upsample by `common_stride` brings them to the input's size.

    Args:
        in_features: {name: stride} of the features used (p2..p5); channels: their channel count.
        num_classes, conv_dims, common_stride, norm: SEM_SEG_HEAD's NUM_CLASSES, CONVS_DIM,
            COMMON_STRIDE, NORM.

    forward(features) -> logits [1, num_classes, H, W] at the padded input's size.
    Each level's module is registered under the level's name (`p2`, ...), as in detectron2.
    """

    def __init__(self, in_features: dict[str, int], channels: int, *, num_classes: int, conv_dims: int,
                 common_stride: int, norm: str = ""):
        super().__init__()
        if not in_features:
            raise ValueError("the semantic head needs at least one input feature")
        levels = sorted(in_features.items(), key=lambda kv: kv[1])
        self.in_features = tuple(name for name, _ in levels)
        self.common_stride = int(common_stride)
        for name, stride in levels:
            ops = []
            for k in range(max(1, int(math.log2(stride) - math.log2(self.common_stride)))):
                ops.append(Conv2d(channels if k == 0 else conv_dims, conv_dims, kernel_size=3, padding=1,
                                  bias=not norm, norm=make_norm(norm, conv_dims), activation=True))
                if stride != self.common_stride:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.add_module(name, nn.Sequential(*ops))
        self.predictor = nn.Conv2d(conv_dims, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = None
        for name in self.in_features:
            y = getattr(self, name)(features[name])
            x = y if x is None else x + y
        x = self.predictor(x)
        return F.interpolate(x, scale_factor=float(self.common_stride), mode="bilinear", align_corners=False)


class _Normalized(nn.Module):
    def __init__(self, pixel_mean: Sequence[float], pixel_std: Sequence[float]):
        super().__init__()
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"PIXEL_MEAN {pixel_mean} and PIXEL_STD {pixel_std} differ in length")
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.backbone((images - self.pixel_mean) / self.pixel_std)


class SemanticSegmentor(_Normalized):
    """Normalise -> backbone -> semantic head.

    forward(images [1, 3, H, W] raw pixels resized and padded, im_info [1, 2]) -> sem_seg_logits
    [1, C, H, W] at the padded size (the host crops the valid region and resizes it to the image,
    detectron2's sem_seg_postprocess). `im_info` is taken for a uniform detectron2 input contract.
    """

    def __init__(self, backbone: nn.Module, sem_seg_head: SemSegFPNHead, *, pixel_mean: Sequence[float],
                 pixel_std: Sequence[float]):
        super().__init__(pixel_mean, pixel_std)
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head

    def forward(self, images: torch.Tensor, im_info: torch.Tensor):
        return self.sem_seg_head(self.features(images))


class PanopticFPN(GeneralizedRCNN):
    """GeneralizedRCNN plus a semantic head on the same features.

    forward(images, im_info) -> (boxes, scores, classes, mask_probs, sem_seg_logits [1, C, H, W]).
    """

    def __init__(self, backbone: nn.Module, proposal_generator: nn.Module, roi_heads: nn.Module,
                 sem_seg_head: SemSegFPNHead, *, pixel_mean: Sequence[float], pixel_std: Sequence[float]):
        super().__init__(backbone, proposal_generator, roi_heads, pixel_mean=pixel_mean, pixel_std=pixel_std)
        self.sem_seg_head = sem_seg_head

    def forward(self, images: torch.Tensor, im_info: torch.Tensor):
        image_hw = im_info[0]
        features = self.features(images)
        proposals, _ = self.proposal_generator(features, image_hw)
        return tuple(self.roi_heads(features, proposals, image_hw)) + (self.sem_seg_head(features),)


class ProposalNetwork(_Normalized):
    """Normalise -> backbone -> RPN: the proposals as class-agnostic detections.

    forward(images, im_info) -> (boxes [P, 4], scores [P] = sigmoid(objectness logit), classes [P]
    all 0). detectron2 keeps the logits; the sigmoid keeps their order and makes them scores the
    detection task reads (ranked the same, thresholded at > 0 as every detection score).
    """

    def __init__(self, backbone: nn.Module, proposal_generator: nn.Module, *, pixel_mean: Sequence[float],
                 pixel_std: Sequence[float]):
        super().__init__(pixel_mean, pixel_std)
        self.backbone = backbone
        self.proposal_generator = proposal_generator

    def forward(self, images: torch.Tensor, im_info: torch.Tensor):
        boxes, logits = self.proposal_generator(self.features(images), im_info[0])
        return boxes, logits.sigmoid(), torch.zeros_like(logits, dtype=torch.int64)
