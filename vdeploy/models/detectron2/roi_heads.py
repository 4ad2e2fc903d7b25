"""detectron2's ROI heads at inference: StandardROIHeads (FPN / DC5) and Res5ROIHeads (C4).

Building blocks are public for other heads (cascade): `FastRCNNConvFCHead`,
`FastRCNNOutputLayers` and `fast_rcnn_inference`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from .box_ops import Box2BoxTransform, DEFAULT_SCALE_CLAMP, clip_boxes
from .class_nms import class_batched_nms
from .poolers import ROIPooler
from .resnet import Conv2d, make_norm, make_stage


class FastRCNNConvFCHead(nn.Module):
    """`conv1..convN` (3x3 + norm + ReLU) then `fc1..fcM` (+ ReLU) on pooled [R, C, S, S] features.

    Args: in_channels, pooler_resolution (S), conv_dims (list), fc_dims (list), conv_norm.
    forward(x [R, C, S, S]) -> [R, fc_dims[-1]] (or the flattened conv output when no fc).
    """

    def __init__(self, in_channels: int, pooler_resolution: int, *, conv_dims: Sequence[int] = (),
                 fc_dims: Sequence[int] = (1024, 1024), conv_norm: str = ""):
        super().__init__()
        self._convs, self._fcs = [], []
        channels = in_channels
        for k, dim in enumerate(conv_dims, start=1):
            conv = Conv2d(channels, dim, 3, padding=1, bias=conv_norm == "", norm=make_norm(conv_norm, dim),
                          activation=True)
            self.add_module(f"conv{k}", conv)
            self._convs.append(conv)
            channels = dim
        size = channels * pooler_resolution * pooler_resolution
        for k, dim in enumerate(fc_dims, start=1):
            fc = nn.Linear(size, dim)
            self.add_module(f"fc{k}", fc)
            self._fcs.append(fc)
            size = dim
        self.output_size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self._convs:
            x = conv(x)
        x = torch.flatten(x, start_dim=1)
        for fc in self._fcs:
            x = F.relu(fc(x))
        return x


class FastRCNNOutputLayers(nn.Module):
    """Class logits (`cls_score`, K+1 with background last) and box deltas (`bbox_pred`).

    Args:
        input_size: feature size per box; num_classes: K.
        cls_agnostic_bbox_reg: one box regression shared by all classes.
        bbox_reg_weights, scale_clamp: Box2BoxTransform parameters.
        score_thresh, nms_thresh, topk_per_image: test-time parameters of `fast_rcnn_inference`.
        use_sigmoid_ce: scores are sigmoid(logits) rather than softmax.

    forward(x [R, D]) -> (logits [R, K+1], deltas [R, 4 or K*4]).
    """

    def __init__(self, input_size: int, num_classes: int, *, cls_agnostic_bbox_reg: bool = False,
                 bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0), scale_clamp: float = DEFAULT_SCALE_CLAMP,
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, topk_per_image: int = 100,
                 use_sigmoid_ce: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(input_size, num_classes + 1)
        self.bbox_pred = nn.Linear(input_size, (1 if cls_agnostic_bbox_reg else num_classes) * 4)
        self.box2box = Box2BoxTransform(bbox_reg_weights, scale_clamp)
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.topk_per_image = int(topk_per_image)
        self.use_sigmoid_ce = use_sigmoid_ce

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.flatten(x, start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)

    def predict_boxes(self, deltas: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """[R, 4 or K*4] decoded boxes."""
        return self.box2box.apply_deltas(deltas, proposals)

    def predict_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """[R, K+1] class probabilities, background last."""
        return logits.sigmoid() if self.use_sigmoid_ce else F.softmax(logits, dim=-1)

    def inference(self, logits: torch.Tensor, deltas: torch.Tensor, proposals: torch.Tensor,
                  image_hw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return fast_rcnn_inference(self.predict_boxes(deltas, proposals), self.predict_probs(logits), image_hw,
                                   score_thresh=self.score_thresh, nms_thresh=self.nms_thresh,
                                   topk_per_image=self.topk_per_image)


def fast_rcnn_inference(boxes: torch.Tensor, probs: torch.Tensor, image_hw: torch.Tensor, *,
                        score_thresh: float, nms_thresh: float,
                        topk_per_image: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """detectron2's `fast_rcnn_inference_single_image`.

    boxes [R, 4 or K*4], probs [R, K+1] (background last), image_hw [2] (valid h, w).
    Drops non-finite rows, clips, keeps (box, class) pairs scoring above `score_thresh`, runs
    NMS per class and keeps the `topk_per_image` best (all when negative).
    Returns (boxes [N, 4], scores [N], classes [N] int64), by decreasing score.
    """
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(probs).all(dim=1)
    rows = torch.nonzero(valid).squeeze(1)
    boxes, scores = boxes[rows], probs[rows, :-1]
    boxes = clip_boxes(boxes.reshape(-1, 4), image_hw).reshape(rows.shape[0], -1, 4)

    if torch.onnx.is_in_onnx_export():
        # One NMS per class in the graph (class_nms.py: the coordinate trick is quadratic in the
        # candidates, which an LVIS model has by the million).
        boxes = boxes.expand(-1, scores.shape[1], -1) if boxes.shape[1] == 1 else boxes
        per_class = topk_per_image if topk_per_image >= 0 else 2 ** 31 - 1
        rows, classes = class_batched_nms(boxes, scores, score_thresh, nms_thresh, per_class)
        kept = scores[rows, classes]
        order = torch.argsort(kept, descending=True)  # ONNX TopK: ties keep the lower index first
        if topk_per_image >= 0:
            order = order[:topk_per_image]
        return boxes[rows[order], classes[order]], kept[order], classes[order]

    # (row, class) of every candidate, row-major as detectron2's boolean-mask indexing orders them.
    inds = torch.nonzero(scores > score_thresh)
    # Class-specific regression: the class's own box; class-agnostic (one box): column 0.
    # (decided on the static shape: a clamp against a shape-derived tensor would be traced as a CPU
    # constant and fail on a CUDA device)
    box_col = inds[:, 1] if boxes.shape[1] > 1 else torch.zeros_like(inds[:, 1])
    boxes = boxes[inds[:, 0], box_col]
    scores = scores[inds[:, 0], inds[:, 1]]
    keep = batched_nms(boxes, scores, inds[:, 1], nms_thresh)
    if topk_per_image >= 0:
        keep = keep[:topk_per_image]
    return boxes[keep], scores[keep], inds[keep, 1]


class StandardROIHeads(nn.Module):
    """Box head on pooled FPN (or single-level) features, then an optional mask head on the detections.

    Args:
        in_features: feature names pooled (p2..p5, or res5 for DC5).
        box_pooler, box_head, box_predictor: ROIPooler, FastRCNNConvFCHead, FastRCNNOutputLayers.
        mask_pooler, mask_head: ROIPooler and MaskRCNNConvUpsampleHead, or None (Faster R-CNN).
        mask_in_features: feature names for the mask pooler (defaults to in_features).
        keypoint_pooler, keypoint_head: ROIPooler and KRCNNConvDeconvUpsampleHead, or None.

    forward(features, proposals [P, 4], image_hw [2])
    -> (boxes, scores, classes[, mask_probs][, keypoint_heatmaps [N, K, S, S]]).
    """

    def __init__(self, in_features: Sequence[str], box_pooler: ROIPooler, box_head: nn.Module,
                 box_predictor: FastRCNNOutputLayers, *, mask_pooler: Optional[ROIPooler] = None,
                 mask_head: Optional[nn.Module] = None, mask_in_features: Optional[Sequence[str]] = None,
                 keypoint_pooler: Optional[ROIPooler] = None, keypoint_head: Optional[nn.Module] = None):
        super().__init__()
        self.in_features = tuple(in_features)
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.mask_on = mask_head is not None
        if self.mask_on:
            self.mask_in_features = tuple(mask_in_features or in_features)
            self.mask_pooler = mask_pooler
            self.mask_head = mask_head
        self.keypoint_on = keypoint_head is not None
        if self.keypoint_on:
            self.keypoint_pooler = keypoint_pooler
            self.keypoint_head = keypoint_head

    def box_outputs(self, features: dict[str, torch.Tensor], boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw predictor outputs (class logits, deltas) for the given boxes [R, 4]."""
        x = self.box_pooler([features[f] for f in self.in_features], boxes)
        return self.box_predictor(self.box_head(x))

    def keypoint_outputs(self, features: dict[str, torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        """Keypoint heatmap logits [N, K, S, S] of the detections' boxes [N, 4] (pooled from the
        box head's features, as detectron2's keypoint_in_features are)."""
        return self.keypoint_head(self.keypoint_pooler([features[f] for f in self.in_features], boxes))

    def mask_outputs(self, features: dict[str, torch.Tensor], boxes: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Mask probabilities [N, M, M] of the given detections (boxes [N, 4], classes [N])."""
        return self.mask_head(self.mask_pooler([features[f] for f in self.mask_in_features], boxes), classes)

    def forward(self, features: dict[str, torch.Tensor], proposals: torch.Tensor, image_hw: torch.Tensor):
        logits, deltas = self.box_outputs(features, proposals)
        boxes, scores, classes = self.box_predictor.inference(logits, deltas, proposals, image_hw)
        out = (boxes, scores, classes)
        if self.mask_on:
            out += (self.mask_outputs(features, boxes, classes),)
        if self.keypoint_on:
            out += (self.keypoint_outputs(features, boxes),)
        return out


class Res5ROIHeads(nn.Module):
    """C4 heads: ROIAlign on res4, the res5 stage per box, then box predictor on its spatial mean.

    Args:
        in_features: ("res4",); pooler: ROIPooler (resolution 14, scale 1/16).
        res5: the res5 stage (`make_res5_stage`), named `res5` as in detectron2.
        box_predictor: FastRCNNOutputLayers on res5's channels.
        mask_head: optional MaskRCNNConvUpsampleHead on res5 features of the detections.
    """

    def __init__(self, in_features: Sequence[str], pooler: ROIPooler, res5: nn.Module,
                 box_predictor: FastRCNNOutputLayers, *, mask_head: Optional[nn.Module] = None):
        super().__init__()
        self.in_features = tuple(in_features)
        self.pooler = pooler
        self.res5 = res5
        self.box_predictor = box_predictor
        self.mask_on = mask_head is not None
        if self.mask_on:
            self.mask_head = mask_head

    def _shared_roi_transform(self, features: dict[str, torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        return self.res5(self.pooler([features[f] for f in self.in_features], boxes))

    def box_outputs(self, features: dict[str, torch.Tensor], boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.box_predictor(self._shared_roi_transform(features, boxes).mean(dim=[2, 3]))

    def mask_outputs(self, features: dict[str, torch.Tensor], boxes: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return self.mask_head(self._shared_roi_transform(features, boxes), classes)

    def forward(self, features: dict[str, torch.Tensor], proposals: torch.Tensor, image_hw: torch.Tensor):
        logits, deltas = self.box_outputs(features, proposals)
        boxes, scores, classes = self.box_predictor.inference(logits, deltas, proposals, image_hw)
        if not self.mask_on:
            return boxes, scores, classes
        return boxes, scores, classes, self.mask_outputs(features, boxes, classes)


def make_res5_stage(*, depth: int = 50, res2_out_channels: int = 256, num_groups: int = 1,
                    width_per_group: int = 64, stride_in_1x1: bool = True, norm: str = "FrozenBN",
                    res5_dilation: int = 1) -> nn.Sequential:
    """The res5 stage that Res5ROIHeads runs per box (3 bottleneck blocks, first one strided)."""
    if depth in (18, 34):
        raise ValueError("Res5ROIHeads (C4) needs a bottleneck ResNet (depth >= 50)")
    if res5_dilation != 1:
        raise ValueError("Res5ROIHeads (C4) does not support RES5_DILATION != 1")
    factor = 2 ** 3
    out_channels = res2_out_channels * factor
    return make_stage(3, out_channels // 2, out_channels, first_stride=2, depth=depth,
                      bottleneck_channels=num_groups * width_per_group * factor, num_groups=num_groups,
                      norm=norm, stride_in_1x1=stride_in_1x1)
