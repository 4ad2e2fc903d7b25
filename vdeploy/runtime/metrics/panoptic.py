"""Panoptic quality (PQ, SQ, RQ) as panopticapi's `pq_compute` defines it (panopticapi is not on
PyPI; this follows its evaluation.py step by step).

Per image: a ground-truth and a predicted segment match when they have the same category and
IoU > 0.5, where the union leaves out the predicted segment's pixels that are void (id 0) in the
ground truth; crowd ground truth is never matched. Unmatched non-crowd ground truth is a false
negative; an unmatched prediction is a false positive unless more than half of it lies on void
or on a crowd region of its own category. Per category PQ = sum IoU / (TP + FP/2 + FN/2),
SQ = sum IoU / TP, RQ = TP / (TP + FP/2 + FN/2); the averages are over the categories with any
TP, FP or FN, for all categories, things and stuff.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

VOID = 0
OFFSET = 256 * 256 * 256


@dataclass
class PQStat:
    """Accumulated per-category counts: {category: [iou sum, tp, fp, fn]}."""
    per_cat: dict = field(default_factory=lambda: defaultdict(lambda: [0.0, 0, 0, 0]))

    def add(self, other: "PQStat") -> None:
        for c, v in other.per_cat.items():
            mine = self.per_cat[c]
            for i in range(4):
                mine[i] += v[i]

    def average(self, categories: dict[int, bool], isthing=None) -> tuple[dict, dict]:
        """({pq, sq, rq, n}, {category: {pq, sq, rq}}) over `categories` ({id: isthing}),
        restricted to things or stuff when `isthing` is True / False."""
        pq = sq = rq = 0.0
        n = 0
        per_class = {}
        for c, cat_isthing in categories.items():
            if isthing is not None and bool(cat_isthing) != isthing:
                continue
            iou, tp, fp, fn = self.per_cat.get(c, (0.0, 0, 0, 0))
            if tp + fp + fn == 0:
                per_class[c] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            denom = tp + 0.5 * fp + 0.5 * fn
            per_class[c] = {"pq": iou / denom, "sq": iou / tp if tp else 0.0, "rq": tp / denom}
            pq, sq, rq = pq + per_class[c]["pq"], sq + per_class[c]["sq"], rq + per_class[c]["rq"]
        if n == 0:
            return {"pq": None, "sq": None, "rq": None, "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def pq_single(gt_ids: np.ndarray, gt_segments: list[dict], pred_ids: np.ndarray, pred_segments: list[dict]) -> PQStat:
    """One image. *_ids: H x W segment ids (0 = void); *_segments: {"id", "category_id"[, "iscrowd",
    "area"]} (the ground truth's area is taken from its segment when given, as panopticapi does;
    the prediction's is counted from its map). Raises ValueError for a prediction whose map and
    segment list disagree (panopticapi's KeyError)."""
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(f"panoptic maps differ in size: ground truth {gt_ids.shape}, prediction {pred_ids.shape}")
    stat = PQStat()
    gt = {int(s["id"]): s for s in gt_segments}
    pred = {int(s["id"]): dict(s) for s in pred_segments}
    gt_area = {i: s.get("area") for i, s in gt.items()}
    ids, counts = np.unique(gt_ids, return_counts=True)
    for i, c in zip(ids.tolist(), counts.tolist()):
        if i in gt and gt_area[i] is None:
            gt_area[i] = c
    unseen = set(pred)
    ids, counts = np.unique(pred_ids, return_counts=True)
    for i, c in zip(ids.tolist(), counts.tolist()):
        if i not in pred:
            if i == VOID:
                continue
            raise ValueError(f"segment {i} is in the panoptic map but not in its segments_info")
        pred[i]["area"] = c
        unseen.discard(i)
    if unseen:
        raise ValueError(f"segments {sorted(unseen)} are in segments_info but not in the panoptic map")
    pairs = gt_ids.astype(np.uint64) * OFFSET + pred_ids.astype(np.uint64)
    labels, counts = np.unique(pairs, return_counts=True)
    inter = {(int(l // OFFSET), int(l % OFFSET)): int(c) for l, c in zip(labels, counts)}

    gt_matched, pred_matched = set(), set()
    for (g, p), n in inter.items():
        if g not in gt or p not in pred or gt[g].get("iscrowd", 0) == 1:
            continue
        if gt[g]["category_id"] != pred[p]["category_id"]:
            continue
        union = pred[p]["area"] + gt_area[g] - n - inter.get((VOID, p), 0)
        iou = n / union
        if iou > 0.5:
            s = stat.per_cat[gt[g]["category_id"]]
            s[0] += iou
            s[1] += 1
            gt_matched.add(g)
            pred_matched.add(p)
    crowd = {}
    for g, info in gt.items():
        if g in gt_matched:
            continue
        if info.get("iscrowd", 0) == 1:
            crowd[info["category_id"]] = g
            continue
        stat.per_cat[info["category_id"]][3] += 1
    for p, info in pred.items():
        if p in pred_matched:
            continue
        n = inter.get((VOID, p), 0)
        if info["category_id"] in crowd:
            n += inter.get((crowd[info["category_id"]], p), 0)
        if n / info["area"] > 0.5:
            continue
        stat.per_cat[info["category_id"]][2] += 1
    return stat


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG (H x W x 3, RGB) -> segment ids: R + 256 G + 256^2 B."""
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    ids = ids.astype(np.uint32)
    return np.stack([ids % 256, ids // 256 % 256, ids // (256 * 256) % 256], axis=-1).astype(np.uint8)
