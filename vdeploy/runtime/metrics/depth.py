"""Monocular depth metrics as MMSegmentation 1.2.2's DepthMetric computes them (numpy, no torch).

Per image, over the evaluation mask (ground truth in the open interval (min_depth, max_depth),
and with the "nyu" crop only rows 45:471, columns 41:601, the Eigen crop of NYU's 640x480
frames), with ratio = max(gt / pred, pred / gt) and d = ln(pred) - ln(gt):

    d1, d2, d3   share of pixels with ratio < 1.25, 1.25**2, 1.25**3
    abs_rel      mean(|pred - gt| / gt)
    sq_rel       mean((pred - gt)**2 / gt)
    rmse         sqrt(mean((pred - gt)**2))                      (metres)
    rmse_log     sqrt(mean(d**2))
    log10        mean(|log10(pred) - log10(gt)|)
    silog        sqrt(mean(d**2) - 0.5 * mean(d)**2)             (natural log, not x100)

and the dataset's figure is the mean of the images' figures (as mmseg, not a pixel-weighted mean).

Where this differs from mmseg, on inputs where mmseg's numbers are inf or nan:
  * A predicted depth that is not a positive finite number inside the mask (0 in a depth PNG
    means "no depth") is scored as `min_depth` (or 1 mm when min_depth is 0), the
    floor that the usual depth benchmarks (BTS, AdaBins, the Monocular-Depth-Estimation-Toolbox
    mmseg adapted its crop from) clip predictions to: the image's figures stay finite and such
    a pixel counts as the worst plausible near-depth guess, instead of one pixel turning the
    whole dataset's abs_rel into inf and its log metrics into nan. The count is reported.
    VPD's predictions are sigmoid * max_depth > 0, so this never changes its numbers; positive
    predictions are never clipped (mmseg does not clip them either).
  * An image with an empty evaluation mask (no valid ground truth) has no figures and is left
    out of the means (mmseg would make every mean nan); the count is reported.

Ground truth and predictions are taken as float32, as mmseg holds them, and the ratio thresholds
are compared in float32: depths quantised to millimetres often stand in a ratio of exactly 1.25
(800 mm vs 1000 mm), and whether that counts depends on float32's rounding. The error means are
accumulated in float64 (mmseg's float32 sums differ from them by about 1e-7 relative).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

METRICS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")
CROPS = ("none", "nyu")
NYU_CROP = (slice(45, 471), slice(41, 601))   # rows, columns (Eigen et al.'s crop of 480 x 640)
NYU_CROP_MIN_HW = (471, 601)                  # smaller maps would lose part of the crop
ZERO_MIN_FLOOR = 1e-3                         # metres: the floor when min_depth is 0 (1 mm, a depth PNG's step)


@dataclass
class ImageDepthScores:
    metrics: Optional[dict[str, float]]  # None: empty evaluation mask
    pixels: int                           # pixels in the evaluation mask
    floored: int                          # of those, predictions that were not positive (scored as the floor)


def eval_mask(gt: np.ndarray, min_depth: float, max_depth: float, crop: str = "none") -> np.ndarray:
    """Pixels scored: min_depth < gt < max_depth (compared in float32, as mmseg), inside the crop."""
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; choose from {', '.join(CROPS)}")
    gt = np.asarray(gt, np.float32)
    mask = (gt > np.float32(min_depth)) & (gt < np.float32(max_depth))
    if crop == "nyu":
        crop_mask = np.zeros_like(mask)
        crop_mask[NYU_CROP] = True
        mask &= crop_mask
    return mask


def prediction_floor(min_depth: float) -> float:
    return float(min_depth) if min_depth > 0 else ZERO_MIN_FLOOR


def depth_metrics(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The nine figures for matching 1-D arrays of valid depths (gt > 0, pred > 0, not empty)."""
    gt32 = np.asarray(gt, np.float32).reshape(-1)
    pred32 = np.asarray(pred, np.float32).reshape(-1)
    if gt32.shape != pred32.shape or gt32.size == 0:
        raise ValueError(f"depth_metrics needs two non-empty arrays of one size, got {gt32.size} and {pred32.size}")
    ratio = np.maximum(gt32 / pred32, pred32 / gt32)  # float32, as mmseg's thresholds see it
    n = ratio.size
    g, p = gt32.astype(np.float64), pred32.astype(np.float64)
    diff = p - g
    dlog = np.log(p) - np.log(g)
    mean_sq_log = float(np.mean(dlog ** 2))
    return {
        "d1": float(np.count_nonzero(ratio < np.float32(1.25)) / n),
        "d2": float(np.count_nonzero(ratio < np.float32(1.25 ** 2)) / n),
        "d3": float(np.count_nonzero(ratio < np.float32(1.25 ** 3)) / n),
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff ** 2 / g)),
        "rmse": float(np.sqrt(np.mean(diff ** 2))),
        "rmse_log": float(np.sqrt(mean_sq_log)),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        # mean(d^2) >= mean(d)^2, so the radicand is >= 0 up to rounding
        "silog": float(np.sqrt(max(mean_sq_log - 0.5 * float(np.mean(dlog)) ** 2, 0.0))),
    }


def score_image(gt: np.ndarray, pred: np.ndarray, min_depth: float, max_depth: float,
                crop: str = "none") -> ImageDepthScores:
    """One image: `gt` and `pred` H x W depths in metres (gt 0 = no depth)."""
    gt = np.asarray(gt, np.float32)
    pred = np.asarray(pred, np.float32)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth is {gt.shape} but the prediction is {pred.shape}")
    mask = eval_mask(gt, min_depth, max_depth, crop)
    g, p = gt[mask], pred[mask]
    if g.size == 0:
        return ImageDepthScores(None, 0, 0)
    bad = ~(np.isfinite(p) & (p > 0))
    floored = int(np.count_nonzero(bad))
    if floored:
        p = np.where(bad, np.float32(prediction_floor(min_depth)), p)
    return ImageDepthScores(depth_metrics(g, p), int(g.size), floored)


def mean_metrics(per_image: Sequence[Optional[dict[str, float]]]) -> dict[str, Optional[float]]:
    """The dataset's figures: the mean over the images that have figures (None when none has)."""
    scored = [m for m in per_image if m is not None]
    return {k: (float(np.mean([m[k] for m in scored])) if scored else None) for k in METRICS}
