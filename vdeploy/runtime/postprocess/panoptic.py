"""detectron2's `combine_semantic_and_instance_outputs` (PanopticFPN's inference), on the host.

Instances, best score first and down to `instances_score_threshold`, claim their pasted mask's
pixels not yet taken, unless more than `overlap_threshold` of the mask is taken already; then each
semantic label other than 0 ("things") takes its pixels still free when they cover at least
`stuff_area_threshold`. Segment ids count from 1 in that order; 0 is unlabelled.
"""
from __future__ import annotations

import numpy as np


def combine_semantic_and_instances(masks: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                                   label_map: np.ndarray, *, overlap_threshold: float, stuff_area_threshold: float,
                                   instances_score_threshold: float) -> tuple[np.ndarray, list[dict]]:
    """masks [N, H, W] bool, scores [N], classes [N], label_map [H, W] semantic labels
    -> (segment ids [H, W] int32, segments_info: {"id", "isthing", "category_id", "area", ["score",
    "instance_id"]} per segment, category ids contiguous: thing classes for things, semantic
    labels for stuff)."""
    seg = np.zeros(label_map.shape, np.int32)
    info: list[dict] = []
    for i in np.argsort(-scores, kind="stable"):
        score = float(scores[i])
        if score < instances_score_threshold:
            break
        mask = masks[i]
        area = int(mask.sum())
        if area == 0:
            continue
        taken = seg > 0
        overlap = int((mask & taken).sum())
        if overlap / area > overlap_threshold:
            continue
        if overlap:
            mask = mask & ~taken
        seg[mask] = len(info) + 1
        info.append({"id": len(info) + 1, "isthing": True, "category_id": int(classes[i]), "score": score,
                     "instance_id": int(i), "area": int(mask.sum())})
    for label in np.unique(label_map):
        if label == 0:  # the semantic head's "things" label
            continue
        mask = (label_map == label) & (seg == 0)
        area = int(mask.sum())
        if area < stuff_area_threshold:
            continue
        seg[mask] = len(info) + 1
        info.append({"id": len(info) + 1, "isthing": False, "category_id": int(label), "area": area})
    return seg, info
