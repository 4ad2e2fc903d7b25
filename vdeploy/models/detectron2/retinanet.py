"""RetinaNet (detectron2 semantics), inference only, written to trace into ONNX.

The graph takes `images` (raw 0-255 pixels, already resized and padded by the host) and
`im_info`, and returns detections in resized-image pixels before detectron2's
`detector_postprocess`: boxes (not clipped: detectron2's RetinaNet leaves clipping to the
post-processing), scores and 0-based classes.

Everything that depends on the input size (anchor grids, per-level candidate counts) is
computed from traced tensor shapes, so one export serves every image size.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torchvision
from torch import Tensor, nn

from .box_ops import Box2BoxTransform
from .resnet import make_norm
from .rpn import AnchorGenerator


class RetinaNetHead(nn.Module):
    """Two parallel conv towers (classification, box regression) shared by every level.

    Submodule names follow detectron2 (`cls_subnet.0/2/4/6`, `cls_score`, ...; with a `norm`,
    conv / norm / ReLU triples: `cls_subnet.0/1/3/4/...`) so its checkpoints load as they are.
    `norm` is shared by every level, so only per-sample norms ("" or "GN") are accepted: detectron2
    gives BN heads one BatchNorm per level, a layout this head does not have.
    """

    def __init__(self, *, in_channels: int, num_classes: int, num_anchors: int,
                 num_convs: int, prior_prob: float = 0.01, norm: str = ""):
        super().__init__()
        if norm not in ("", "GN"):
            raise ValueError(f"head norm {norm!r} is not supported ('' or 'GN')")
        cls_layers: list[nn.Module] = []
        box_layers: list[nn.Module] = []
        for _ in range(num_convs):
            for layers in (cls_layers, box_layers):
                layers.append(nn.Conv2d(in_channels, in_channels, 3, padding=1))
                if norm:
                    layers.append(make_norm(norm, in_channels))
                layers.append(nn.ReLU())
        self.cls_subnet = nn.Sequential(*cls_layers)
        self.bbox_subnet = nn.Sequential(*box_layers)
        self.cls_score = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        # Focal-loss prior: an untrained head starts out predicting `prior_prob` everywhere.
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits = [self.cls_score(self.cls_subnet(f)) for f in features]
        deltas = [self.bbox_pred(self.bbox_subnet(f)) for f in features]
        return logits, deltas


def _capped(count, cap: int):
    """min(count, cap) that stays a graph value when `count` is a traced shape."""
    if isinstance(count, Tensor):
        return torch.clamp(count, max=cap)
    return min(count, cap)


class RetinaNet(nn.Module):
    """Normalise -> backbone (FPN P3-P7) -> shared head -> per-level candidates -> class-wise NMS.

    Args:
        backbone: returns a dict of named feature maps; head: RetinaNetHead;
        anchors: AnchorGenerator over `head_in_features` (p3..p7).
        box_transform: Box2BoxTransform with MODEL.RETINANET.BBOX_REG_WEIGHTS.
        pixel_mean, pixel_std: per-channel normalisation in the input's colour order.
        score_thresh, topk_candidates (per level), nms_thresh, max_detections: test-time selection.

    forward(images [1, 3, H, W] raw 0-255 pixels, padded with the pixel mean) -> boxes [N, 4],
    scores [N], classes [N] int64, by decreasing score.
    """

    # RetinaNet needs no valid-region information (detectron2 neither clips nor masks before
    # post-processing), and the ONNX exporter drops unused inputs: an exported graph has no
    # `im_info`, so the deploy spec must list `images` only.
    takes_im_info = False

    def __init__(self, *, backbone: nn.Module, head: RetinaNetHead, anchors: AnchorGenerator,
                 head_in_features: Sequence[str], num_classes: int,
                 box_transform: Box2BoxTransform, pixel_mean: Sequence[float],
                 pixel_std: Sequence[float], score_thresh: float = 0.05,
                 topk_candidates: int = 1000, nms_thresh: float = 0.5,
                 max_detections: int = 100):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.anchors = anchors
        self.head_in_features = list(head_in_features)
        self.num_classes = int(num_classes)
        self.box_transform = box_transform
        self.score_thresh = float(score_thresh)
        self.topk_candidates = int(topk_candidates)
        self.nms_thresh = float(nms_thresh)
        self.max_detections = int(max_detections)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    def features(self, images: Tensor) -> dict[str, Tensor]:
        return self.backbone((images - self.pixel_mean) / self.pixel_std)

    def forward(self, images: Tensor, im_info: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
        """im_info is accepted (and ignored) for the detectron2 graph contract."""
        feats = self.features(images)
        feats = [feats[name] for name in self.head_in_features]
        logits, deltas = self.head(feats)
        return self.detect(logits, deltas, self.anchors(feats))

    def detect(self, logits: Sequence[Tensor], deltas: Sequence[Tensor],
               anchors: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Class logits -> detections (see `select`). Batch of one image."""
        return self.select([logit.sigmoid() for logit in logits], deltas, anchors)

    def select(self, probs: Sequence[Tensor], deltas: Sequence[Tensor],
               anchors: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Per level: best `topk_candidates` scores (probs [1, A*K, H, W]) above the threshold,
        decoded by `box_transform`; then class-wise NMS over all levels. Batch of one image.
        Shared by the dense detectors that differ only in how they score (FCOS)."""
        boxes_all, scores_all, classes_all = [], [], []
        for prob, delta, anchor in zip(probs, deltas, anchors):
            # (1, A*K, H, W) -> flat (H, W, A, K) order, as detectron2's permute_to_N_HWA_K.
            scores = prob[0].permute(1, 2, 0).reshape(-1)
            delta = delta[0].permute(1, 2, 0).reshape(-1, 4)
            # Top-k first, then the threshold: the same set, in the same (descending) order,
            # as detectron2's threshold-then-top-k, without a data-dependent k.
            top_scores, top_idx = scores.topk(_capped(scores.shape[0], self.topk_candidates))
            keep = top_scores > self.score_thresh
            top_scores, top_idx = top_scores[keep], top_idx[keep]
            anchor_idx = torch.div(top_idx, self.num_classes, rounding_mode="floor")
            boxes_all.append(self.box_transform.apply_deltas(delta[anchor_idx], anchor[anchor_idx]))
            scores_all.append(top_scores)
            classes_all.append(top_idx % self.num_classes)
        boxes = torch.cat(boxes_all)
        scores = torch.cat(scores_all)
        classes = torch.cat(classes_all)
        keep = torchvision.ops.batched_nms(boxes, scores, classes, self.nms_thresh)
        keep = keep[: self.max_detections]
        return boxes[keep], scores[keep], classes[keep]

