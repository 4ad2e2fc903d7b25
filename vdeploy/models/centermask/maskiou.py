"""CenterMask's MaskIoU head: a per-class estimate of each predicted mask's IoU (mask scoring)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..detectron2.resnet import Conv2d
from ..detectron2.mask_head import select_class


class MaskIoUHead(nn.Module):
    """Predicts each mask's IoU with its object, per class, from the pooled features and the mask.

    The mask [N, 2S, 2S] is max-pooled to S x S and stacked on the features [N, C, S, S]; then
    `maskiou_fcn1..N` (3x3 + ReLU, the last with stride 2), `maskiou_fc1`, `maskiou_fc2` (+ ReLU)
    and the linear `maskiou` layer [N, K].

    forward(features, mask_probs, classes) -> the IoU of each box's predicted class [N].
    """

    def __init__(self, in_channels: int, resolution: int, *, conv_dim: int, num_conv: int, num_classes: int,
                 fc_dim: int = 1024):
        super().__init__()
        if num_conv < 1:
            raise ValueError("the MaskIoU head needs at least one conv (its last one halves the resolution)")
        self._convs = []
        channels = in_channels + 1
        for k in range(1, num_conv + 1):
            conv = Conv2d(channels, conv_dim, 3, stride=2 if k == num_conv else 1, padding=1, activation=True)
            self.add_module(f"maskiou_fcn{k}", conv)
            self._convs.append(conv)
            channels = conv_dim
        side = resolution // 2
        self.maskiou_fc1 = nn.Linear(conv_dim * side * side, fc_dim)
        self.maskiou_fc2 = nn.Linear(fc_dim, fc_dim)
        self.maskiou = nn.Linear(fc_dim, num_classes)

    def forward(self, features: torch.Tensor, mask_probs: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        x = torch.cat((features, F.max_pool2d(mask_probs[:, None], kernel_size=2, stride=2)), dim=1)
        for conv in self._convs:
            x = conv(x)
        x = F.relu(self.maskiou_fc1(x.flatten(1)))
        x = F.relu(self.maskiou_fc2(x))
        return select_class(self.maskiou(x), classes)
