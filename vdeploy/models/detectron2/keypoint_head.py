"""detectron2's KRCNNConvDeconvUpsampleHead at inference: per-box keypoint heatmap logits.

The heatmaps leave the graph as they are; turning them into (x, y, score) needs a bicubic resize
of each box's heatmaps to the box's own size in pixels, a shape that differs per box, so it is
done on the host (vdeploy.runtime.postprocess.keypoints), exactly as detectron2's
`heatmaps_to_keypoints` does it, as masks are pasted on the host.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class KRCNNConvDeconvUpsampleHead(nn.Module):
    """`conv_fcn1..N` (3x3 + ReLU), `score_lowres` (4x4/2 transposed conv to K maps), then a
    bilinear 2x upsample.

    Args: in_channels (pooled features), num_keypoints (K), conv_dims (channels of each conv).
    forward(x [N, C, S, S]) -> heatmap logits [N, K, 4S, 4S].
    """

    def __init__(self, in_channels: int, *, num_keypoints: int, conv_dims: Sequence[int]):
        super().__init__()
        self._convs = []
        channels = in_channels
        for k, dim in enumerate(conv_dims, start=1):
            conv = nn.Conv2d(channels, int(dim), 3, padding=1)
            self.add_module(f"conv_fcn{k}", conv)
            self._convs.append(conv)
            channels = int(dim)
        self.score_lowres = nn.ConvTranspose2d(channels, num_keypoints, 4, stride=2, padding=1)
        self.num_keypoints = num_keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self._convs:
            x = F.relu(conv(x))
        x = self.score_lowres(x)
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
