"""Per-class NMS over every (proposal, class) pair of an R-CNN box head, exported as one ONNX
NonMaxSuppression whose batch axis is the class.

detectron2 runs `batched_nms` over the candidates that pass the score threshold; on the CPU, for
more than 4000 of them, torchvision loops over the classes. Traced for export, torchvision uses
its coordinate trick instead (one NMS over all candidates, offset per class), which is quadratic
in the number of candidates: an LVIS model (1203 classes, SCORE_THRESH_TEST 1e-4) has up to
1000 x 1203 of them, hours of NMS in the graph. ONNX's NonMaxSuppression runs one independent
NMS per batch entry, so feeding it boxes [K, R, 4] and scores [K, 1, R] is the per-class loop,
each NMS over at most R boxes. The selected set is the same as detectron2's: per class, the
boxes scoring above the threshold, greedily suppressed at IoU > nms_thresh.
"""
from __future__ import annotations

import torch
from torchvision.ops import nms


class ClassBatchedNMS(torch.autograd.Function):
    """boxes [K, R, 4] (x1 y1 x2 y2), scores [K, 1, R] -> selected [N, 3] int64 rows of
    (class, 0, proposal), ONNX NonMaxSuppression's layout. Eager: a loop over the classes."""

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class, iou_threshold, score_threshold):
        picked = []
        for k in range(boxes.shape[0]):
            s = scores[k, 0]
            cand = torch.nonzero(s > score_threshold).squeeze(1)
            keep = cand[nms(boxes[k, cand], s[cand], float(iou_threshold))][: int(max_per_class)]
            picked.append(torch.stack([torch.full_like(keep, k), torch.zeros_like(keep), keep], dim=1))
        return torch.cat(picked) if picked else torch.zeros((0, 3), dtype=torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_threshold, score_threshold):
        return g.op("NonMaxSuppression", boxes, scores, max_per_class, iou_threshold, score_threshold)


def class_batched_nms(boxes: torch.Tensor, scores: torch.Tensor, score_thresh: float, nms_thresh: float,
                      max_per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """boxes [R, K, 4], scores [R, K] -> (proposal index, class) of the kept pairs, in the row-major
    (proposal, class) order detectron2's candidates have, so that a stable sort by score breaks
    ties as it does."""
    k = scores.shape[1]
    sel = ClassBatchedNMS.apply(boxes.transpose(0, 1).contiguous(), scores.t().unsqueeze(1).contiguous(),
                                torch.tensor([max_per_class], dtype=torch.int64),
                                torch.tensor([nms_thresh], dtype=torch.float32),
                                torch.tensor([score_thresh], dtype=torch.float32))
    rows, classes = sel[:, 2], sel[:, 0]
    order = torch.argsort(rows * k + classes)
    return rows[order], classes[order]
