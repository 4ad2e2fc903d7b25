"""detectron2's MaskRCNNConvUpsampleHead at inference: per-box mask probabilities."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import Conv2d, make_norm


class MaskRCNNConvUpsampleHead(nn.Module):
    """`mask_fcn1..N` (3x3 + norm + ReLU), `deconv` (2x2/2 transposed conv + ReLU), `predictor` (1x1).

    Args:
        in_channels: channels of the pooled features.
        conv_dims: output channels of each mask_fcn conv (may be empty, as in C4 heads).
        deconv_dim: channels of the deconv layer (detectron2: ROI_MASK_HEAD.CONV_DIM).
        num_classes: K; with cls_agnostic the predictor has one channel for all classes.
        conv_norm: norm of the mask_fcn convs ("" = none; they then have biases).

    forward(x [N, C, S, S], classes [N] int64) -> sigmoid probabilities [N, 2S, 2S] of each box's
    predicted class.
    """

    def __init__(self, in_channels: int, *, conv_dims: Sequence[int], deconv_dim: int, num_classes: int,
                 cls_agnostic: bool = False, conv_norm: str = ""):
        super().__init__()
        self._convs = []
        channels = in_channels
        for k, dim in enumerate(conv_dims, start=1):
            conv = Conv2d(channels, dim, 3, padding=1, bias=conv_norm == "", norm=make_norm(conv_norm, dim),
                          activation=True)
            self.add_module(f"mask_fcn{k}", conv)
            self._convs.append(conv)
            channels = dim
        self.deconv = nn.ConvTranspose2d(channels, deconv_dim, kernel_size=2, stride=2)
        self.cls_agnostic = cls_agnostic
        self.predictor = nn.Conv2d(deconv_dim, 1 if cls_agnostic else num_classes, 1)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """Hook between the convs and the deconv (CenterMask's SAG-Mask gates features here)."""
        return x

    def forward(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        for conv in self._convs:
            x = conv(x)
        logits = self.predictor(F.relu(self.deconv(self._attend(x))))
        if self.cls_agnostic:
            return logits[:, 0].sigmoid()
        # One mask per box: the channel of its predicted class.
        return select_class(logits, classes).sigmoid()


def select_class(per_class: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """per_class[i, classes[i]] for every row i (one entry per box: its predicted class)."""
    rows = torch.ones_like(classes).cumsum(0) - 1  # arange(N) without reading a shape
    return per_class[rows, classes]
