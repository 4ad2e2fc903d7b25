"""MMSegmentation's PointHead (PointRend) at inference: the coarse logits of the previous head
refined by `subdivision_steps` rounds of: upsample x`scale_factor` (bilinear), pick the
`subdivision_num_points` most uncertain pixels (smallest gap between the top two class scores),
sample fine features and coarse logits there (bilinear, mmcv's point_sample), classify each
point with a per-point MLP (1x1 Conv1d), and write the point logits back into the map.

For ONNX the number of points is min(H * W, subdivision_num_points) computed from the traced
size, so that one graph serves every image size: TopK, GridSample and ScatterElements are stock
operators. Names follow mmseg's (`fcs.K.conv`, `fc_seg`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import RELU, activation


class _Conv1dModule(nn.Module):
    """mmcv's ConvModule with conv_cfg Conv1d and no norm: Conv1d (with bias) then activation."""

    def __init__(self, cin, cout, act):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, 1)
        self.activate = activation(act) if act is not None else None

    def forward(self, x):
        x = self.conv(x)
        return x if self.activate is None else self.activate(x)


def point_sample(x, points, align_corners=False):
    """Features of `x` [N, C, H, W] at points [N, P, 2] in [0, 1] (x, y) -> [N, C, P]."""
    grid = (2.0 * points - 1.0).unsqueeze(2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners).squeeze(3)


def uncertainty(logits):
    """Second-best minus best class score per pixel (0 where the top two tie)."""
    top2 = torch.topk(logits, k=2, dim=1)[0]
    return (top2[:, 1] - top2[:, 0]).unsqueeze(1)


class PointHead(nn.Module):
    def __init__(self, in_channels: Sequence[int], channels, num_classes, *, in_index=(0,), num_fcs=3,
                 coarse_pred_each_layer=True, align_corners=False, subdivision_steps=2, subdivision_num_points=8196,
                 scale_factor=2, norm=None, act=RELU):
        super().__init__()
        if norm is not None:
            raise ValueError("PointHead with a norm_cfg is not supported")
        self.in_index = tuple(in_index)
        self.align_corners = align_corners
        self.coarse_pred_each_layer = coarse_pred_each_layer
        self.steps, self.num_points, self.scale_factor = subdivision_steps, subdivision_num_points, scale_factor
        cin = sum(in_channels) + num_classes
        fcs = []
        for _ in range(num_fcs):
            fcs.append(_Conv1dModule(cin, channels, act))
            cin = channels + (num_classes if coarse_pred_each_layer else 0)
        self.fcs = nn.ModuleList(fcs)
        self.fc_seg = nn.Conv1d(cin, num_classes, 1)

    def classify(self, fine, coarse):
        x = torch.cat([fine, coarse], dim=1)
        for fc in self.fcs:
            x = fc(x)
            if self.coarse_pred_each_layer:
                x = torch.cat([x, coarse], dim=1)
        return self.fc_seg(x)

    def most_uncertain(self, logits):
        """Flat indices [N, P] of the most uncertain pixels and their centres [N, P, 2] in [0, 1]."""
        n, _, h, w = logits.shape
        flat = uncertainty(logits).reshape(n, -1)
        if torch.jit.is_tracing():  # the count from the traced size: one graph for every size
            size = torch._shape_as_tensor(logits)
            k = torch.clamp(size[2] * size[3], max=self.num_points)
        else:
            k = min(h * w, self.num_points)
        idx = flat.topk(k, dim=1)[1]
        xs = (idx % w).float() * (1.0 / w) + 0.5 / w
        ys = torch.div(idx, w, rounding_mode="floor").float() * (1.0 / h) + 0.5 / h
        return idx, torch.stack([xs, ys], dim=2)

    def forward(self, inputs, prev_logits):
        feats = [inputs[i] for i in self.in_index]
        refined = prev_logits
        for _ in range(self.steps):
            n, c, h, w = refined.shape
            size = (h * self.scale_factor, w * self.scale_factor)
            refined = F.interpolate(refined, size=size, mode="bilinear", align_corners=self.align_corners)
            idx, points = self.most_uncertain(refined)
            fine = torch.cat([point_sample(f, points, self.align_corners) for f in feats], dim=1)
            coarse = point_sample(prev_logits, points, self.align_corners)
            point_logits = self.classify(fine, coarse)
            flat = refined.reshape(n, c, -1).scatter(2, idx.unsqueeze(1).expand(-1, c, -1), point_logits)
            refined = flat.reshape(n, c, size[0], size[1])
        return refined
