"""detectron2's Region Proposal Network at inference: anchors, head, and proposal selection.

Everything that depends on the image size (anchor grids, top-k counts, clipping) is computed
from tensors, so a traced/exported graph works for any input size.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from .box_ops import Box2BoxTransform, DEFAULT_SCALE_CLAMP, clip_boxes, nonempty


def _per_level(values: Sequence, num_levels: int, what: str) -> list:
    """detectron2's broadcast rule: one list for all levels, or one list per level."""
    values = [list(v) for v in values]
    if len(values) == 1:
        return values * num_levels
    if len(values) != num_levels:
        raise ValueError(f"anchor {what} give {len(values)} levels, the features have {num_levels}")
    return values


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> torch.Tensor:
    """Anchors [len(sizes)*len(aspect_ratios), 4] centred on (0, 0): sizes outer, ratios inner.

    An anchor of size s and ratio r (= h / w) has area s^2. Computed in float64, stored float32,
    as detectron2 does.
    """
    anchors = []
    for size in sizes:
        area = size ** 2.0
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors, dtype=torch.float32)


def _index_vector(like: torch.Tensor) -> torch.Tensor:
    """0, 1, ..., len(like)-1 as float32, derived from a tensor so tracing keeps it dynamic."""
    return torch.ones_like(like, dtype=torch.float32).cumsum(0) - 1


class AnchorGenerator(nn.Module):
    """detectron2's DefaultAnchorGenerator.

    Args:
        sizes: anchor sizes, one list per level (or one list for all levels).
        aspect_ratios: h / w ratios, one list per level (or one for all).
        strides: stride of each feature level.
        offset: anchor centre offset in units of the stride (0.0 or 0.5).

    forward(features: list [1, C, Hi, Wi]) -> list of anchors [Hi*Wi*A, 4], ordered (y, x, anchor).
    """

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]],
                 strides: Sequence[int], offset: float = 0.0):
        super().__init__()
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"anchor offset must be in [0, 1), got {offset}")
        n = len(strides)
        sizes = _per_level(sizes, n, "sizes")
        ratios = _per_level(aspect_ratios, n, "aspect ratios")
        self.strides = [int(s) for s in strides]
        self.offset = float(offset)
        for i, (s, r) in enumerate(zip(sizes, ratios)):
            self.register_buffer(f"cell_anchors_{i}", cell_anchors(s, r), persistent=False)
        self.num_anchors = [len(s) * len(r) for s, r in zip(sizes, ratios)]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        anchors = []
        for i, (feature, stride) in enumerate(zip(features, self.strides)):
            base = getattr(self, f"cell_anchors_{i}")
            shift_x = (_index_vector(feature[0, 0, 0, :]) + self.offset) * stride
            shift_y = (_index_vector(feature[0, 0, :, 0]) + self.offset) * stride
            sy, sx = torch.meshgrid(shift_y, shift_x, indexing="ij")
            sx, sy = sx.reshape(-1), sy.reshape(-1)
            shifts = torch.stack((sx, sy, sx, sy), dim=1)
            anchors.append((shifts[:, None, :] + base[None, :, :]).reshape(-1, 4))
        return anchors


class StandardRPNHead(nn.Module):
    """Shared 3x3 conv(s) + ReLU, then 1x1 objectness logits (A) and anchor deltas (A*4) per level.

    `conv_dims`: output channels of each shared conv; -1 means "same as the input" (the default
    single conv). One conv is named `conv`, several `conv.conv0`, `conv.conv1`, ... as in detectron2.
    """

    def __init__(self, in_channels: int, num_anchors: int, box_dim: int = 4, conv_dims: Sequence[int] = (-1,)):
        super().__init__()
        dims = [in_channels if d == -1 else int(d) for d in conv_dims]
        if len(dims) == 1:
            self.conv = nn.Conv2d(in_channels, dims[0], 3, padding=1)
        else:
            self.conv = nn.Sequential()
            prev = in_channels
            for k, d in enumerate(dims):
                self.conv.add_module(f"conv{k}", nn.Conv2d(prev, d, 3, padding=1))
                prev = d
        self._num_convs = len(dims)
        self.objectness_logits = nn.Conv2d(dims[-1], num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(dims[-1], num_anchors * box_dim, 1)

    def _shared(self, x: torch.Tensor) -> torch.Tensor:
        if self._num_convs == 1:
            return F.relu(self.conv(x))
        for conv in self.conv:
            x = F.relu(conv(x))
        return x

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """-> (objectness [1, A, Hi, Wi] per level, deltas [1, A*4, Hi, Wi] per level)."""
        logits, deltas = [], []
        for x in features:
            t = self._shared(x)
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


def _topk_count(n, k: int):
    """min(n, k) where n is a Python int in eager mode and a 0-d tensor while tracing."""
    if isinstance(n, torch.Tensor):
        return torch.clamp(n, max=k)
    return min(n, k)


def find_top_rpn_proposals(proposals: list[torch.Tensor], logits: list[torch.Tensor], image_hw: torch.Tensor, *,
                           nms_thresh: float, pre_nms_topk: int, post_nms_topk: int,
                           min_box_size: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """detectron2's proposal selection for one image.

    Per level keep the `pre_nms_topk` highest-scoring boxes; then over all levels together:
    drop non-finite ones, clip to `image_hw` (valid h, w), drop boxes not larger than
    `min_box_size`, NMS within each level, keep the `post_nms_topk` best.

    proposals: per level [Ni, 4]; logits: per level [Ni]. Returns (boxes [P, 4], logits [P]),
    sorted by decreasing logit.
    """
    boxes_l, scores_l, levels_l = [], [], []
    for level, (boxes_i, logits_i) in enumerate(zip(proposals, logits)):
        k = _topk_count(logits_i.shape[0], pre_nms_topk)
        scores_i, idx = logits_i.topk(k)
        boxes_l.append(boxes_i[idx])
        scores_l.append(scores_i)
        levels_l.append(torch.full_like(idx, level))
    boxes = torch.cat(boxes_l)
    scores = torch.cat(scores_l)
    levels = torch.cat(levels_l)

    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
    boxes = clip_boxes(boxes, image_hw)
    keep = torch.nonzero(valid & nonempty(boxes, min_box_size)).squeeze(1)
    boxes, scores, levels = boxes[keep], scores[keep], levels[keep]

    keep = batched_nms(boxes, scores, levels, nms_thresh)[:post_nms_topk]
    return boxes[keep], scores[keep]


class RPN(nn.Module):
    """Region proposal network: head + anchors + box decoding + `find_top_rpn_proposals`.

    Args:
        in_features: pyramid levels used (e.g. p2..p6).
        head: StandardRPNHead; anchor_generator: AnchorGenerator (same number of levels).
        bbox_reg_weights: Box2BoxTransform weights (detectron2 RPN default 1, 1, 1, 1).
        nms_thresh, pre_nms_topk, post_nms_topk, min_box_size: test-time selection parameters.

    forward(features: dict name -> [1, C, H, W], image_hw: [2] tensor) -> (boxes [P, 4], logits [P]).
    """

    def __init__(self, in_features: Sequence[str], head: nn.Module, anchor_generator: AnchorGenerator, *,
                 bbox_reg_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), nms_thresh: float = 0.7,
                 pre_nms_topk: int = 1000, post_nms_topk: int = 1000, min_box_size: float = 0.0,
                 scale_clamp: float = DEFAULT_SCALE_CLAMP):
        super().__init__()
        self.in_features = tuple(in_features)
        self.rpn_head = head
        self.anchor_generator = anchor_generator
        self.box2box = Box2BoxTransform(bbox_reg_weights, scale_clamp)
        self.nms_thresh = float(nms_thresh)
        self.pre_nms_topk = int(pre_nms_topk)
        self.post_nms_topk = int(post_nms_topk)
        self.min_box_size = float(min_box_size)

    def forward(self, features: dict[str, torch.Tensor], image_hw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = [features[f] for f in self.in_features]
        anchors = self.anchor_generator(feats)
        logits, deltas = self.rpn_head(feats)
        proposals, scores = [], []
        for anchors_i, logits_i, deltas_i, a in zip(anchors, logits, deltas, self.anchor_generator.num_anchors):
            # [1, A, H, W] -> [H*W*A] and [1, A*4, H, W] -> [H*W*A, 4]: the anchors' (y, x, a) order.
            scores.append(logits_i[0].permute(1, 2, 0).reshape(-1))
            d = deltas_i[0].reshape(a, 4, -1).permute(2, 0, 1).reshape(-1, 4)
            proposals.append(self.box2box.apply_deltas(d, anchors_i))
        return find_top_rpn_proposals(proposals, scores, image_hw, nms_thresh=self.nms_thresh,
                                      pre_nms_topk=self.pre_nms_topk, post_nms_topk=self.post_nms_topk,
                                      min_box_size=self.min_box_size)
