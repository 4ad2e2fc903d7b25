"""Semantic segmentation metrics as MMSegmentation's IoUMetric computes them: a confusion
matrix over the pixels whose label is neither the ignore index nor outside [0, C)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def confusion(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """C x (C + 1) int64 pixel counts: rows = label, columns = prediction, the last column for
    predictions outside [0, C) (always wrong, but still in their label's area)."""
    valid = (label != ignore_index) & (label >= 0) & (label < num_classes)
    gt = label[valid].astype(np.int64)
    pr = pred[valid].astype(np.int64)
    pr = np.where((pr >= 0) & (pr < num_classes), pr, num_classes)
    cm = np.bincount(gt * (num_classes + 1) + pr, minlength=num_classes * (num_classes + 1))
    return cm.reshape(num_classes, num_classes + 1)


def segmentation_metrics(cm: np.ndarray, class_names: Optional[Sequence[str]] = None):
    """(summary, per_class) from a `confusion` matrix: mIoU, mAcc, aAcc as fractions. A class
    absent from both label and prediction has no IoU, one absent from the label no Acc; both
    are left out of the means (MMSegmentation's nanmean)."""
    cm = cm.astype(np.float64)
    n = cm.shape[0]
    intersect = np.diag(cm[:, :n])
    area_label = cm.sum(axis=1)
    area_pred = cm[:, :n].sum(axis=0)
    union = area_label + area_pred - intersect
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, intersect / union, np.nan)
        acc = np.where(area_label > 0, intersect / area_label, np.nan)
    total = area_label.sum()
    summary = {
        "mIoU": _nanmean(iou),
        "mAcc": _nanmean(acc),
        "aAcc": float(intersect.sum() / total) if total > 0 else None,
    }
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    per_class = {names[i]: {"IoU": _num(iou[i]), "Acc": _num(acc[i])} for i in range(n)}
    return summary, per_class


def _nanmean(x: np.ndarray) -> Optional[float]:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else None


def _num(v: float) -> Optional[float]:
    return None if np.isnan(v) else float(v)
