"""Compare a backend's raw outputs with the reference's (torch-free, Polygraphy-style).

Dense outputs are compared element-wise against per-output tolerances; detections (whose count
and order can legitimately differ where a score or an IoU sits on a threshold) are first matched
by IoU and class. Every result reports the smallest absolute tolerance that would have passed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DETECTION_OUTPUTS = ("boxes", "scores", "classes", "mask_probs")


@dataclass(frozen=True)
class Tolerance:
    rtol: float = 1e-3
    atol: float = 1e-4


# Per-output defaults where float32 error legitimately grows. Mask probabilities are RoIAlign
# samples taken at the boxes, and the boxes themselves differ by ~1e-2 px between engines; with
# confident (steep) mask logits a 0.01-mask-pixel shift moves a probability near 0.5 by a few
# 1e-2. They are thresholded at 0.5 afterwards, and the pasted masks are what COCO AP scores.
# Segmentation logits are O(10) and summed over many dilated 3x3 convolutions: engines differ by a
# few 1e-3 absolute (~1e-4 of the logit scale) where the values cross zero, which rtol cannot cover.
# Detection scores are classified from RoIAlign features sampled at those same boxes, and a cascade
# chains three such stages: up to ~1e-3 absolute on probabilities. Box coordinates near 0 get no
# help from rtol: 0.05 px absolute is far below the ~0.3 px shift that starts to cost COCO AP.
DEFAULT_TOLERANCES = {"mask_probs": Tolerance(1e-3, 5e-2), "logits": Tolerance(1e-3, 1e-2),
                      "scores": Tolerance(1e-3, 2e-3), "boxes": Tolerance(1e-3, 5e-2)}


@dataclass
class OutputResult:
    name: str
    passed: bool
    max_abs: float = 0.0
    max_rel: float = 0.0
    needed_atol: float = 0.0  # smallest atol that passes at the configured rtol
    note: str = ""
    tol: Tolerance = field(default_factory=Tolerance)

    def as_dict(self) -> dict:
        return {"output": self.name, "passed": self.passed, "max_abs": self.max_abs, "max_rel": self.max_rel,
                "needed_atol": self.needed_atol, "rtol": self.tol.rtol, "atol": self.tol.atol, "note": self.note}


def compare_dense(name: str, ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> OutputResult:
    if ref.shape != got.shape:
        return OutputResult(name, False, float("inf"), float("inf"), float("inf"), f"shape {got.shape} != {ref.shape}", tol)
    if ref.size == 0:
        return OutputResult(name, True, tol=tol, note="empty")
    a, b = got.astype(np.float64), ref.astype(np.float64)
    diff = np.abs(a - b)
    if not np.isfinite(a).all():
        return OutputResult(name, False, float("inf"), float("inf"), float("inf"), "non-finite values", tol)
    needed = float(np.max(diff - tol.rtol * np.abs(b)).clip(min=0))
    rel = float(np.max(diff / np.maximum(np.abs(b), 1e-12)))
    return OutputResult(name, needed <= tol.atol, float(diff.max()), rel, needed, "", tol)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod((rb - lt).clip(min=0), axis=2)
    area = lambda x: np.prod((x[:, 2:] - x[:, :2]).clip(min=0), axis=1)
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def match_detections(ref: dict, got: dict, iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching in order of reference score: (ref indices, got indices) of matched pairs."""
    rb, gb = ref["boxes"].reshape(-1, 4), got["boxes"].reshape(-1, 4)
    if len(rb) == 0 or len(gb) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    iou = _iou(rb, gb)
    iou[ref["classes"].reshape(-1)[:, None] != got["classes"].reshape(-1)[None, :]] = 0
    used = np.zeros(len(gb), bool)
    ri, gi = [], []
    for i in np.argsort(-ref["scores"].reshape(-1), kind="stable"):
        cand = np.where(used, -1.0, iou[i])
        j = int(cand.argmax())
        if cand[j] >= iou_threshold:
            used[j] = True
            ri.append(i)
            gi.append(j)
    return np.array(ri, int), np.array(gi, int)


def _scored(d: dict) -> dict:
    """Rows with a positive score only: OpenVINO answers an empty result with one uninitialised row
    of score 0, which the host postprocessing drops as well (detectron2's filter is `score > t`);
    the zero rows that pad static outputs go the same way."""
    keep = d["scores"].reshape(-1) > 0
    return {k: (v[keep] if k in DETECTION_OUTPUTS and v.shape[:1] == keep.shape else v) for k, v in d.items()}


def compare_detections(ref: dict, got: dict, tolerances: dict[str, Tolerance],
                       max_unmatched: float = 0.02) -> list[OutputResult]:
    ref, got = _scored(ref), _scored(got)
    ri, gi = match_detections(ref, got)
    n_ref, n_got = len(ref["scores"].reshape(-1)), len(got["scores"].reshape(-1))
    unmatched = max(n_ref - len(ri), n_got - len(gi))
    frac = unmatched / max(n_ref, n_got, 1)
    results = [OutputResult("detections", frac <= max_unmatched, note=f"{len(ri)} matched of {n_ref} reference / {n_got} backend"
                            + (f", {unmatched} unmatched ({frac:.1%}, allowed {max_unmatched:.0%})" if unmatched else ""))]
    for name in ("boxes", "scores", "mask_probs"):
        if name in ref and name in got:
            results.append(compare_dense(name, ref[name][ri], got[name][gi], tolerances.get(name, Tolerance())))
    return results


def compare_outputs(ref: dict, got: dict, task: str, tolerances: dict[str, Tolerance] | None = None) -> list[OutputResult]:
    """Element-wise diagnostics of one input's raw outputs, as the task compares them."""
    from .tasks import get_task

    return get_task(task).compare_raw(ref, got, {**DEFAULT_TOLERANCES, **(tolerances or {})})
