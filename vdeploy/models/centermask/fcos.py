"""FCOS at inference, as centermask2's proposal generator: dense per-location class scores,
centerness and (l, t, r, b) distances, turned into scored, class-labelled boxes in-graph.

Selection follows centermask2: per level keep locations/classes whose class probability passes
the threshold (or class x centerness with `thresh_with_ctr`), at most `pre_nms_topk` of them by
class x centerness; over all levels, NMS per class, then the `post_nms_topk` best. The score is
sqrt(class probability x centerness). Boxes are not clipped, as upstream.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms


class Scale(nn.Module):
    """One learnable scalar per level multiplying the box regression (`scales.<i>.scale`)."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(init_value)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def _tower(num_convs: int, channels: int, group_norm: bool) -> nn.Sequential:
    """conv3x3 (+ GroupNorm(32)) + ReLU, repeated; indices match upstream's nn.Sequential."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(channels, channels, 3, 1, 1))
        if group_norm:
            layers.append(nn.GroupNorm(32, channels))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """Shared / class / box towers over every level, then `cls_logits`, `bbox_pred`, `ctrness`.

    forward(features: list [1, C, Hi, Wi]) -> per level (class logits [1, K, Hi, Wi],
    distances [1, 4, Hi, Wi] >= 0 in units of the level's stride, centerness logits [1, 1, Hi, Wi]).
    """

    def __init__(self, in_channels: int, num_classes: int, num_levels: int, *, num_cls_convs: int = 4,
                 num_box_convs: int = 4, num_share_convs: int = 0, group_norm: bool = True, use_scale: bool = True):
        super().__init__()
        self.num_classes = int(num_classes)
        self.cls_tower = _tower(num_cls_convs, in_channels, group_norm)
        self.bbox_tower = _tower(num_box_convs, in_channels, group_norm)
        self.share_tower = _tower(num_share_convs, in_channels, group_norm)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, 1, 1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, 1, 1)
        self.ctrness = nn.Conv2d(in_channels, 1, 3, 1, 1)
        self.scales = nn.ModuleList([Scale() for _ in range(num_levels)]) if use_scale else None

    def forward(self, features: list[torch.Tensor]):
        logits, distances, ctrness = [], [], []
        for level, x in enumerate(features):
            x = self.share_tower(x)
            cls_t = self.cls_tower(x)
            box_t = self.bbox_tower(x)
            logits.append(self.cls_logits(cls_t))
            ctrness.append(self.ctrness(box_t))
            reg = self.bbox_pred(box_t)
            if self.scales is not None:
                reg = self.scales[level](reg)
            distances.append(F.relu(reg))
        return logits, distances, ctrness


def locations_of(feature: torch.Tensor, stride: int) -> torch.Tensor:
    """Image coordinates [H*W, 2] (x, y) of a level's cells, row-major: index * stride + stride // 2.

    Built from the feature's own rows/columns so a traced graph follows the input size.
    """
    xs = (torch.ones_like(feature[0, 0, 0, :]).cumsum(0) - 1) * stride
    ys = (torch.ones_like(feature[0, 0, :, 0]).cumsum(0) - 1) * stride
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((x.reshape(-1), y.reshape(-1)), dim=1) + stride // 2


def _at_most(n, k: int):
    """min(n, k) for a Python int (eager) or a 0-d tensor (while tracing, so it stays dynamic)."""
    return torch.clamp(n, max=k) if isinstance(n, torch.Tensor) else min(n, k)


class FCOS(nn.Module):
    """FCOS proposal generator (inference).

    Args:
        in_features: pyramid levels read (e.g. p3..p7); strides: their strides (FPN_STRIDES).
        head: FCOSHead with one Scale per level.
        score_thresh: INFERENCE_TH_TEST; thresh_with_ctr: threshold class x centerness instead.
        pre_nms_topk: candidates kept per level; nms_thresh: per-class IoU threshold;
        post_nms_topk: detections kept over all levels (<= 0: all).

    forward(features: dict name -> [1, C, H, W]) -> (boxes [P, 4] x1y1x2y2 in input pixels,
    scores [P], classes [P] int64, locations [P, 2]), sorted by decreasing score.
    """

    def __init__(self, in_features: Sequence[str], strides: Sequence[int], head: FCOSHead, *,
                 score_thresh: float = 0.05, thresh_with_ctr: bool = False, pre_nms_topk: int = 1000,
                 nms_thresh: float = 0.6, post_nms_topk: int = 100):
        super().__init__()
        if len(in_features) != len(strides):
            raise ValueError(f"FCOS has {len(in_features)} input levels but {len(strides)} strides")
        self.in_features = tuple(in_features)
        self.strides = tuple(int(s) for s in strides)
        self.fcos_head = head
        self.score_thresh = float(score_thresh)
        self.thresh_with_ctr = bool(thresh_with_ctr)
        self.pre_nms_topk = int(pre_nms_topk)
        self.nms_thresh = float(nms_thresh)
        self.post_nms_topk = int(post_nms_topk)

    def _level_candidates(self, logits, distances, ctrness, locations, stride: int):
        k = logits.shape[1]
        cls_prob = logits[0].permute(1, 2, 0).reshape(-1, k).sigmoid()      # [HW, K]
        ctr = ctrness[0].permute(1, 2, 0).reshape(-1).sigmoid()            # [HW]
        dist = distances[0].permute(1, 2, 0).reshape(-1, 4) * stride       # [HW, 4]
        joint = cls_prob * ctr[:, None]
        passed = (joint if self.thresh_with_ctr else cls_prob) > self.score_thresh
        cand = torch.nonzero(passed)                                         # (location, class), row-major
        cand_scores = joint[cand[:, 0], cand[:, 1]]
        top_scores, top = cand_scores.topk(_at_most(cand_scores.shape[0], self.pre_nms_topk), sorted=False)
        loc_idx, classes = cand[top, 0], cand[top, 1]
        loc, d = locations[loc_idx], dist[loc_idx]
        boxes = torch.stack((loc[:, 0] - d[:, 0], loc[:, 1] - d[:, 1], loc[:, 0] + d[:, 2], loc[:, 1] + d[:, 3]), dim=1)
        return boxes, top_scores, classes, loc

    def forward(self, features: dict[str, torch.Tensor]):
        feats = [features[f] for f in self.in_features]
        logits, distances, ctrness = self.fcos_head(feats)
        parts = [self._level_candidates(lg, ds, ct, locations_of(f, s), s)
                 for f, lg, ds, ct, s in zip(feats, logits, distances, ctrness, self.strides)]
        boxes, joint, classes, locations = (torch.cat(p) for p in zip(*parts))
        scores = joint.sqrt()
        keep = batched_nms(boxes, scores, classes, self.nms_thresh)
        if self.post_nms_topk > 0:
            keep = keep[: self.post_nms_topk]
        return boxes[keep], scores[keep], classes[keep], locations[keep]
