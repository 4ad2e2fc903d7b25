"""Keypoint detection (Keypoint R-CNN): detections with K keypoints each (x, y, score).

Agreement is COCO box AP as for detection plus COCO keypoint AP (OKS, iouType "keypoints") of the
backend's keypoints with PyTorch's as ground truth, every reference keypoint counted as visible,
on the same detections (ties at the top-k / score cut left out of both sides as detection does).
Results are COCO keypoint results: `keypoints` flat [x, y, score] * K in COCO's pixel-index
convention (0.5 less than the continuous coordinates, as detectron2 writes them).
"""
from __future__ import annotations

import numpy as np

from ..coco_keypoints import NAMES, SKELETON
from ..vis import palette
from . import register_task
from .base import Gate, Tensor, concat_rows
from .detection import DetectionTask, _ap

# A keypoint is drawn when its score is above this (detectron2's Visualizer threshold).
DRAW_THRESHOLD = 0.05
# OKS sigma for models whose keypoints have none recorded (no COCO person skeleton, no
# TEST.KEYPOINT_OKS_SIGMAS): the mean of COCO's person sigmas.
DEFAULT_SIGMA = 0.0625


def oks_sigmas(spec: dict, num_keypoints: int) -> list[float]:
    sigmas = list((spec.get("keypoints") or {}).get("oks_sigmas") or [])
    return sigmas if len(sigmas) == num_keypoints else [DEFAULT_SIGMA] * num_keypoints


class KeypointsTask(DetectionTask):
    name = "keypoints"
    gates = DetectionTask.gates[:1] + (
        Gate("keypoint_ap", 0.99, True, "COCO keypoint AP (OKS) of the backend, PyTorch's keypoints as ground truth"),
    ) + DetectionTask.gates[1:]
    kinds = ("bbox", "keypoint")  # metrics bbox_ap and keypoint_ap; COCO's iouType "keypoints"

    def kind_ap(self, kind, images, anns, results, spec) -> float:
        if kind != "keypoint":
            return super().kind_ap(kind, images, anns, results, spec)
        # the box annotations and results carry the keypoints (detection.py's _annotations)
        anns, results = anns["bbox"], results["bbox"]
        k = next((len(a["keypoints"]) // 3 for a in anns + results if a.get("keypoints")), 0)
        limit = spec.get("postprocess", {}).get("max_detections") or 100
        return _ap("keypoints", images, anns, results, max_dets=max(int(limit), 100), oks_sigmas=oks_sigmas(spec, k))

    def draw(self, image_bgr, pred, classes, score_threshold):
        """The detections as detection draws them, then each one's keypoints scoring above
        DRAW_THRESHOLD, joined by COCO's person skeleton for 17-keypoint models."""
        import cv2

        img = super().draw(image_bgr, pred, classes, score_threshold)
        if pred.keypoints is None:
            return img
        k = pred.keypoints.shape[1]
        skeleton = SKELETON if k == len(NAMES) else ()
        colors = palette(k + len(skeleton), seed=7)
        for i in np.nonzero(pred.scores >= score_threshold)[0]:
            kps = pred.keypoints[i]
            seen = kps[:, 2] > DRAW_THRESHOLD
            for e, (a, b) in enumerate(skeleton):
                if seen[a] and seen[b]:
                    cv2.line(img, _pt(kps[a]), _pt(kps[b]), tuple(int(c) for c in colors[k + e]), 2, cv2.LINE_AA)
            for j in np.nonzero(seen)[0]:
                cv2.circle(img, _pt(kps[j]), 3, tuple(int(c) for c in colors[j]), -1, cv2.LINE_AA)
        return img


    def serve_outputs(self) -> list[dict]:
        return super().serve_outputs() + [{"name": "keypoints", "datatype": "FP32", "shape": [-1, -1, 3]}]

    def serve_tensors(self, preds) -> list[Tensor]:
        k = max([p.keypoints.shape[1] for p in preds if p.keypoints is not None] or [0])
        return super().serve_tensors(preds) + [
            Tensor("keypoints", "FP32", concat_rows([p.keypoints for p in preds], (0, k, 3), np.float32))]

    def _serve_json_extras(self, pred, dets) -> None:
        if pred.keypoints is not None:
            for d, kps in zip(dets, pred.keypoints):
                d["keypoints"] = [[float(v) for v in kp] for kp in kps]


def _pt(kp) -> tuple[int, int]:
    return int(round(float(kp[0]))), int(round(float(kp[1])))


register_task(KeypointsTask())
