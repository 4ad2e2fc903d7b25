"""COCO box, mask and keypoint AP with the pycocotools protocol; faster-coco-eval (same numbers,
C++ matching) is used for boxes and masks when installed, which keeps 5000 images' results down
to seconds. Keypoint AP is COCO's OKS-based AP (iouType "keypoints")."""
from __future__ import annotations

import contextlib
import io
from typing import Iterable, Optional

import numpy as np

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
KEYPOINT_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl")  # COCO's keypoint areas: all, medium, large
IOU_TYPES = ("bbox", "segm")


def _engine(prefer_fast: bool):
    if prefer_fast:
        try:
            from faster_coco_eval import COCO, COCOeval_faster

            return COCO, COCOeval_faster
        except ImportError:
            pass
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


def _index(COCO, dataset: dict):
    api = COCO()
    api.dataset = dataset
    api.createIndex()
    return api


def coco_ap(gt: dict, results: list[dict], iou_types: Iterable[str] = IOU_TYPES,
            image_ids: Optional[Iterable[int]] = None, prefer_fast: bool = True, **options) -> dict[str, Optional[float]]:
    """See coco_eval; the summary figures only."""
    return coco_eval(gt, results, iou_types, image_ids, prefer_fast, **options)[0]


def coco_eval(gt: dict, results: list[dict], iou_types: Iterable[str] = IOU_TYPES,
              image_ids: Optional[Iterable[int]] = None, prefer_fast: bool = True, *,
              max_dets: Optional[int] = None, oks_sigmas: Optional[Iterable[float]] = None):
    """AP of COCO-format `results` (image_id, category_id, bbox xywh, score[, segmentation])
    against the ground-truth dataset dict `gt`, restricted to `image_ids` (default: all).

    Returns ({"bbox/AP": ..., "bbox/AP50": ..., "segm/AP": ...}, {"bbox": {category_id: AP}, ...}):
    None where COCO says -1 (no ground truth in that area range, or for that category). AP per
    category is COCO's AP (IoU .50:.95, all areas, 100 detections) of that category alone, as
    detectron2's evaluator reports it.

    Kind "keypoints" scores the results' "keypoints" (flat x, y, score per keypoint) by OKS with
    `oks_sigmas` (default: COCO's 17 person sigmas). `max_dets`: detections per image scored
    (default: COCO's, 100 for boxes and masks, 20 for keypoints)."""
    iou_types = tuple(iou_types)
    COCO, COCOeval = _engine(prefer_fast and "keypoints" not in iou_types)
    ids = sorted(image_ids) if image_ids is not None else sorted(im["id"] for im in gt["images"])
    out: dict[str, Optional[float]] = {}
    per_category: dict[str, dict[int, Optional[float]]] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        gt_api = _index(COCO, gt)
        for kind in iou_types:
            # shallow copies: loadRes adds keys to each dict, nothing deeper is touched
            dts = results
            if kind == "segm":
                # As detectron2 does: without the box, a detection's area is its mask's area.
                dts = [{k: v for k, v in d.items() if k != "bbox"} for d in dts if d.get("segmentation")]
            elif kind == "keypoints":
                dts = [{k: v for k, v in d.items() if k != "segmentation"} for d in dts if d.get("keypoints")]
            else:
                dts = [{k: v for k, v in d.items() if k not in ("segmentation", "keypoints")} for d in dts]
            names = KEYPOINT_STAT_NAMES if kind == "keypoints" else STAT_NAMES
            if not dts:
                out.update({f"{kind}/{n}": _empty_stat(gt_api, ids, n) for n in names})
                per_category[kind] = {c["id"]: (0.0 if any(a["category_id"] == c["id"] for a in gt["annotations"]) else None)
                                      for c in gt["categories"]}
                continue
            ev = COCOeval(gt_api, gt_api.loadRes(dts), kind)
            ev.params.imgIds = ids
            if kind == "keypoints" and oks_sigmas is not None:
                ev.params.kpt_oks_sigmas = np.asarray(list(oks_sigmas), np.float64)
            if max_dets is not None:
                ev.params.maxDets = [int(max_dets)] if kind == "keypoints" else [1, 10, int(max_dets)]
            ev.evaluate()
            ev.accumulate()
            if kind == "keypoints":
                # summarizeKps reads its detection limit as a constant (20); read the precision
                # at the limit actually used
                out.update({f"{kind}/{n}": v for n, v in _keypoint_stats(ev).items()})
            else:
                ev.summarize()
                for n, v in zip(STAT_NAMES, ev.stats[:6]):
                    out[f"{kind}/{n}"] = None if v < 0 else float(v)
            per_category[kind] = _per_category(ev)
    return out, per_category


def _keypoint_stats(ev) -> dict[str, Optional[float]]:
    """COCO's keypoint AP, AP50, AP75, APm, APl from the accumulated precision [T, R, K, A, M]
    (areas all, medium, large) at the last detection limit."""
    precision = np.asarray(ev.eval["precision"])
    iou = list(np.round(ev.params.iouThrs, 2))

    def mean(p):
        p = p[p > -1]
        return float(p.mean()) if p.size else None

    return {"AP": mean(precision[:, :, :, 0, -1]), "AP50": mean(precision[iou.index(0.5), :, :, 0, -1]),
            "AP75": mean(precision[iou.index(0.75), :, :, 0, -1]), "APm": mean(precision[:, :, :, 1, -1]),
            "APl": mean(precision[:, :, :, 2, -1])}


def _per_category(ev) -> dict[int, Optional[float]]:
    """AP of each category from the accumulated precision [T, R, K, A, M] at area 'all' and the
    largest detection limit."""
    precision = np.asarray(ev.eval["precision"])
    out = {}
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[int(cat)] = float(p.mean()) if p.size else None
    return out


def _empty_stat(gt_api, ids, name) -> Optional[float]:
    """No detections at all: AP is 0 where there is ground truth to miss, undefined elsewhere."""
    has_gt = any(not a.get("iscrowd", 0) for i in ids for a in gt_api.imgToAnns.get(i, []))
    if name in ("APs", "APm", "APl"):
        return None  # depends on area ranges; not worth reproducing for an empty result
    return 0.0 if has_gt else None
