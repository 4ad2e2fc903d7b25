"""Detection and instance segmentation: agreement is COCO AP of the backend's detections with
PyTorch's detections as ground truth, on boxes and on masks pasted at image size.

Detections that legitimately differ between engines are not mismatches: one missing from a side
only because it sits at that side's cut (the top-k or the score threshold) within the score noise
measured on the matched pairs is a tie at the cut, left out of both sides. Matched pairs (same
class, IoU >= 0.5) report the box error in pixels and the mask IoU as diagnostics.
"""
from __future__ import annotations

import json

from typing import Sequence

import numpy as np

from ..compare import compare_detections, match_detections
from ..metrics.coco import coco_ap
from ..prediction import Prediction
from ..results import encode_rle, to_coco_results
from ..vis import label, palette
from . import register_task
from .base import Agreement, Gate, Task, Tensor, concat_rows

# The score noise of matched pairs, times this, is how close to a cut an unmatched detection
# must be to count as a tie there; bounded so that a broken export cannot hide misses behind it.
TIE_NOISE_FACTOR = 3.0
TIE_TOL_MIN, TIE_TOL_MAX = 1e-3, 0.05


def _as_dict(p: Prediction) -> dict:
    return {"boxes": p.boxes.reshape(-1, 4), "scores": p.scores.reshape(-1), "classes": p.classes.reshape(-1)}


def _cut(p: Prediction, k: int | None, threshold: float) -> float:
    """The score below which this side returned nothing: its lowest score when the top-k was full,
    else the score threshold."""
    if k and len(p) >= k:
        return float(p.scores.min())
    return threshold


def _tie_tolerance(ref: Prediction, got: Prediction, ri, gi) -> float:
    noise = float(np.abs(ref.scores[ri] - got.scores[gi]).max()) if len(ri) else 0.0
    return float(np.clip(TIE_NOISE_FACTOR * noise, TIE_TOL_MIN, TIE_TOL_MAX))


def _mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = np.logical_and(a, b).reshape(len(a), -1).sum(1)
    union = np.logical_or(a, b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _annotations(p: Prediction, keep: np.ndarray, image_id: int, start_id: int, rles) -> list[dict]:
    anns = []
    for n, i in enumerate(np.nonzero(keep)[0]):
        x1, y1, x2, y2 = (float(v) for v in p.boxes[i])
        a = {"id": start_id + n, "image_id": image_id, "category_id": int(p.classes[i]), "iscrowd": 0,
             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
        if rles is not None:
            a["segmentation"] = rles[i]
            a["area"] = float(p.masks[i].sum())
        if p.keypoints is not None:  # every keypoint of the reference counts (visibility 2)
            kps = p.keypoints[i].astype(np.float64).copy()
            kps[:, 2] = 2
            a.update(keypoints=[float(v) for v in kps.reshape(-1)], num_keypoints=int(len(kps)))
        anns.append(a)
    return anns


def _results(p: Prediction, keep: np.ndarray, image_id: int, rles, rank: np.ndarray) -> list[dict]:
    """COCO results of the kept detections, best score first; exact score ties (saturated scores of
    1.0 are common) in the order of the reference's matched detections, so that COCO's stable sort
    does not pit two equal-scoring twins against each other's ground truth."""
    out = []
    kept = np.nonzero(keep)[0]
    for i in kept[np.lexsort((rank[kept], -p.scores[kept]))]:
        x1, y1, x2, y2 = (float(v) for v in p.boxes[i])
        r = {"image_id": image_id, "category_id": int(p.classes[i]), "bbox": [x1, y1, x2 - x1, y2 - y1],
             "score": float(p.scores[i])}
        if rles is not None:
            r["segmentation"] = rles[i]
        if p.keypoints is not None:
            r["keypoints"] = [float(v) for v in p.keypoints[i].reshape(-1)]
        out.append(r)
    return out


class DetectionTask(Task):
    name = "detection"
    gates = (Gate("bbox_ap", 0.99, True, "COCO box AP of the backend, PyTorch's detections as ground truth"),
             # A whole-graph half-pixel slip moves every box the same way: AP barely notices it on
             # large boxes, the mean signed error does. Engines' float32 noise is ~1e-3 px and unbiased.
             Gate("box_offset_px", 0.1, False, "systematic box offset: the largest mean signed error of a box "
                                                "coordinate over the matched detections, in image pixels"))
    kinds = ("bbox",)
    bench_hw = (800, 1333)
    reduced_precision = {"bf16": {"bbox_ap": 0.97, "box_offset_px": 1.0}, "int8": {"bbox_ap": 0.95, "box_offset_px": 1.0}}

    # ---- serving: detections of all B images concatenated, image_index says whose
    def serve_outputs(self) -> list[dict]:
        return [{"name": "boxes", "datatype": "FP32", "shape": [-1, 4]},
                {"name": "scores", "datatype": "FP32", "shape": [-1]},
                {"name": "classes", "datatype": "INT32", "shape": [-1]},
                {"name": "image_index", "datatype": "INT32", "shape": [-1]}]

    def serve_tensors(self, preds) -> list[Tensor]:
        counts = [len(p) for p in preds]
        return [Tensor("boxes", "FP32", concat_rows([p.boxes for p in preds], (0, 4), np.float32)),
                Tensor("scores", "FP32", concat_rows([p.scores for p in preds], (0,), np.float32)),
                Tensor("classes", "INT32", concat_rows([p.classes for p in preds], (0,), np.int32)),
                Tensor("image_index", "INT32", np.repeat(np.arange(len(preds), dtype=np.int32), counts))]

    def serve_json(self, pred, classes) -> dict:
        dets = []
        for i in range(len(pred)):
            c = int(pred.classes[i])
            dets.append({"class_id": c, "class_name": classes[c] if 0 <= c < len(classes) else str(c),
                         "score": float(pred.scores[i]), "bbox": [float(v) for v in pred.boxes[i]]})
        self._serve_json_extras(pred, dets)
        return {"detections": dets, "image_size": list(pred.image_hw)}

    def _serve_json_extras(self, pred, dets: list[dict]) -> None:
        """What a subclass adds to each detection of the JSON answer (masks, keypoints)."""

    def json_results(self, pred, name, classes) -> list[dict]:
        return to_coco_results(pred, name, classes)

    def record(self, pred, key, classes, side_dir) -> dict:
        dets = to_coco_results(pred, key, classes)
        for d in dets:
            d.pop("file_name", None)
        return {"image": key, "detections": dets}

    def compare_raw(self, ref, got, tolerances):
        return compare_detections(ref, got, tolerances)

    def draw(self, image_bgr, pred, classes, score_threshold):
        """Detections scoring at least `score_threshold`, best first, boxes and masks in their class
        colour, each tagged with class and score where tags do not cover each other."""
        import cv2

        img = image_bgr.copy()
        colors = palette(len(classes) or 1)
        keep = np.nonzero(pred.scores >= score_threshold)[0]
        keep = keep[np.argsort(-pred.scores[keep], kind="stable")]
        if pred.masks is not None:
            overlay = img.copy()
            for i in keep[::-1]:  # the best on top
                overlay[pred.masks[i]] = colors[int(pred.classes[i]) % len(colors)]
            img = cv2.addWeighted(img, 0.5, overlay, 0.5, 0)
        for i in keep:
            x1, y1, x2, y2 = (int(round(float(v))) for v in pred.boxes[i])
            c = int(pred.classes[i])
            cv2.rectangle(img, (x1, y1), (x2, y2), tuple(int(v) for v in colors[c % len(colors)]), 2)
        taken: list = []
        for i in keep:
            x1, y1 = (int(round(float(v))) for v in pred.boxes[i][:2])
            c = int(pred.classes[i])
            label(img, f"{classes[c] if c < len(classes) else c} {pred.scores[i]:.2f}", x1, y1 - 2,
                  colors[c % len(colors)], taken)
        return img

    def agreement(self, refs: Sequence[Prediction], gots: Sequence[Prediction], spec: dict) -> Agreement:
        pp = spec.get("postprocess", {})
        k = pp.get("max_detections")
        with_masks = "segm" in self.kinds
        images, per_input, notes, signed_errors = [], [], [], []
        anns: dict[str, list] = {kind: [] for kind in self.kinds}
        results: dict[str, list] = {kind: [] for kind in self.kinds}
        for image_id, (ref, got) in enumerate(zip(refs, gots), start=1):
            h, w = ref.image_hw
            images.append({"id": image_id, "height": int(h), "width": int(w)})
            ri, gi = match_detections(_as_dict(ref), _as_dict(got))
            tol = _tie_tolerance(ref, got, ri, gi)
            all_scores = np.concatenate([ref.scores, got.scores])
            threshold = float(pp.get("score_threshold") or 0.0) or (float(all_scores.min()) if all_scores.size else 0.0)
            keep_ref, keep_got = np.ones(len(ref), bool), np.ones(len(got), bool)
            un_ref = np.setdiff1d(np.arange(len(ref)), ri)
            un_got = np.setdiff1d(np.arange(len(got)), gi)
            ties_ref = un_ref[ref.scores[un_ref] <= _cut(got, k, threshold) + tol]
            ties_got = un_got[got.scores[un_got] <= _cut(ref, k, threshold) + tol]
            keep_ref[ties_ref] = False
            keep_got[ties_got] = False
            rle_ref = encode_rle(ref.masks) if with_masks and ref.masks is not None else None
            rle_got = encode_rle(got.masks) if with_masks and got.masks is not None else None
            anns["bbox"] += _annotations(ref, keep_ref, image_id, len(anns["bbox"]) + 1, None)
            rank = np.full(len(got), len(ref) + len(got), np.int64)  # unmatched: after every matched one
            rank[gi] = np.argsort(np.argsort(-ref.scores, kind="stable"), kind="stable")[ri]
            results["bbox"] += _results(got, keep_got, image_id, None, rank)
            if rle_ref is not None and rle_got is not None:
                # An empty mask can match nothing in COCO's protocol: left out of each side, so a
                # detection whose mask is empty on one side only still counts against the backend.
                anns["segm"] += _annotations(ref, keep_ref & _nonempty(ref.masks), image_id, len(anns["segm"]) + 1, rle_ref)
                results["segm"] += _results(got, keep_got & _nonempty(got.masks), image_id, rle_got, rank)
            row = {"reference": len(ref), "backend": len(got), "matched": int(len(ri)),
                   "ties_at_cut": int(len(ties_ref) + len(ties_got)),
                   "unmatched": int(len(un_ref) + len(un_got) - len(ties_ref) - len(ties_got))}
            if len(ri):
                signed_errors.append(got.boxes[gi].astype(np.float64) - ref.boxes[ri])
                err = np.abs(ref.boxes[ri] - got.boxes[gi])
                row.update(box_err_px_max=float(err.max()), box_err_px_mean=float(err.mean()),
                           score_err_max=float(np.abs(ref.scores[ri] - got.scores[gi]).max()))
                if with_masks and ref.masks is not None and got.masks is not None:
                    iou = _mask_iou(ref.masks[ri], got.masks[gi])
                    row.update(mask_iou_mean=float(iou.mean()), mask_iou_min=float(iou.min()))
            per_input.append(row)
        n_ties = sum(r["ties_at_cut"] for r in per_input)
        if n_ties:
            notes.append(f"{n_ties} detection(s) at a top-k/score cut within the score noise left out as ties")
        metrics = {f"{kind}_ap": self.kind_ap(kind, images, anns, results, spec) for kind in self.kinds}
        offsets = np.concatenate(signed_errors).mean(axis=0) if signed_errors else np.zeros(4)
        metrics["box_offset_px"] = float(np.abs(offsets).max())
        return Agreement(metrics, per_input, notes)

    def kind_ap(self, kind: str, images: list, anns: dict, results: dict, spec: dict) -> float:
        """The agreement AP of one kind; every detection the bundle keeps is scored (at least
        COCO's 100 per image: RPN-only bundles keep 1000 or more)."""
        k = max(int(spec.get("postprocess", {}).get("max_detections") or 100), 100)
        # pycocotools matches in Python: thousands of proposals per image take it hours, so above
        # COCO's 100 the C++ engine scores (its sort may order exact score ties differently)
        return _ap(kind, images, anns[kind], results[kind], max_dets=k, prefer_fast=k > 100)


def _nonempty(masks: np.ndarray) -> np.ndarray:
    if len(masks) == 0:  # reshape(0, -1) is ambiguous
        return np.zeros(0, bool)
    return masks.reshape(len(masks), -1).any(axis=1)


def _ap(kind: str, images: list, anns: list, results: list, **options) -> float:
    """COCO AP of `results` with `anns` as ground truth; 1.0 when neither side has anything, 0.0 when
    only the backend has (every one of its detections is then false)."""
    if not anns:
        return 1.0 if not results else 0.0
    cats = sorted({a["category_id"] for a in anns} | {r["category_id"] for r in results})
    gt = {"images": images, "annotations": anns, "categories": [{"id": c} for c in cats]}
    # pycocotools: its stable sort keeps the tie order above (faster-coco-eval's need not)
    options.setdefault("prefer_fast", False)
    return float(coco_ap(gt, results, (kind,), **options)[f"{kind}/AP"] or 0.0)


class InstanceSegmentationTask(DetectionTask):
    name = "instance_segmentation"
    gates = DetectionTask.gates[:1] + (
        Gate("segm_ap", 0.99, True, "COCO mask AP of the backend (masks pasted at image size), PyTorch's as ground truth"),
    ) + DetectionTask.gates[1:]
    kinds = ("bbox", "segm")
    reduced_precision = {"bf16": {"bbox_ap": 0.97, "segm_ap": 0.97, "box_offset_px": 1.0},
                         "int8": {"bbox_ap": 0.95, "segm_ap": 0.95, "box_offset_px": 1.0}}

    def serve_outputs(self) -> list[dict]:
        return super().serve_outputs() + [{"name": "masks", "datatype": "BYTES", "shape": [-1]}]

    def serve_tensors(self, preds) -> list[Tensor]:
        rles = [json.dumps(r).encode() for p in preds for r in _rles(p)]
        return super().serve_tensors(preds) + [Tensor("masks", "BYTES", np.array(rles, dtype=object).reshape(-1))]

    def _serve_json_extras(self, pred, dets) -> None:
        for d, rle in zip(dets, _rles(pred)):
            d["segmentation"] = rle


def _rles(pred: Prediction) -> list[dict]:
    return encode_rle(pred.masks) if pred.masks is not None and len(pred) else []


register_task(DetectionTask())
register_task(InstanceSegmentationTask())
