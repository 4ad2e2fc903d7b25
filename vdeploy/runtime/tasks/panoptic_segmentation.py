"""Panoptic segmentation (PanopticFPN): every pixel gets a segment, a thing instance or a stuff
region, in COCO's panoptic format (segment ids as R + 256 G + 256^2 B in a PNG, and a segment list).

Agreement is PQ (panopticapi's definition, vdeploy.runtime.metrics.panoptic) of the backend's
panoptic maps with PyTorch's as ground truth over all inputs; SQ and RQ are reported beside it.
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from ..metrics.panoptic import PQStat, id_to_rgb, pq_single
from ..prediction import Prediction
from ..vis import palette
from . import register_task
from .base import Agreement, Gate, Task, Tensor


def category_key(segment: dict, num_things: int) -> int:
    """One id space for things (their class index) and stuff (after the things)."""
    return int(segment["category_id"]) + (0 if segment["isthing"] else num_things)


def segments(pred: Prediction, num_things: int) -> list[dict]:
    return [{"id": s["id"], "category_id": category_key(s, num_things), "iscrowd": 0}
            for s in pred.segments_info or []]


def panoptic_file_name(key: str) -> str:
    from ..results import label_file_name

    return label_file_name(key)


class PanopticSegmentationTask(Task):
    name = "panoptic_segmentation"
    gates = (Gate("pq", 0.99, True, "panoptic quality of the backend's segments, PyTorch's as ground truth"),)
    bench_hw = (800, 1333)

    writes_json = False
    output_noun = "panoptic maps"

    def write_output(self, out_dir, name, pred) -> None:
        """NAME.png (COCO panoptic ids as RGB) and NAME.json (its segments_info)."""
        from ..io import atomic_write, atomic_write_image

        atomic_write_image(out_dir / f"{name}.png", id_to_rgb(pred.panoptic_seg)[..., ::-1])
        atomic_write(out_dir / f"{name}.json", json.dumps({"segments_info": pred.segments_info}, indent=1).encode())

    def record(self, pred, key, classes, side_dir) -> dict:
        """The panoptic PNG goes under `side_dir`; the record names it and lists the segments."""
        from ..io import atomic_write_image

        if side_dir is None:
            raise ValueError("panoptic records need a folder for their panoptic maps")
        name = panoptic_file_name(key)
        atomic_write_image(side_dir / "panoptic" / name, id_to_rgb(pred.panoptic_seg)[..., ::-1])
        return {"image": key, "panoptic_map": f"panoptic/{name}", "segments_info": pred.segments_info}

    # ---- serving (docs/serving.md): the segment-id map as INT32 and each image's segments as JSON
    def serve_outputs(self) -> list[dict]:
        return [{"name": "panoptic_seg", "datatype": "INT32", "shape": [-1, -1, -1]},
                {"name": "segments_info", "datatype": "BYTES", "shape": [-1]}]

    def serve_tensors(self, preds) -> list[Tensor]:
        """panoptic_seg INT32 [B, H, W] (0: no segment), segments_info BYTES [B] (JSON lists)."""
        from ...errors import UserError

        shapes = {p.panoptic_seg.shape for p in preds}
        if len(shapes) > 1:
            raise UserError(f"panoptic answers stack the images' segment maps: send images of one size per "
                            f"request (got {', '.join(f'{h}x{w}' for h, w in sorted(shapes))})")
        seg = np.stack([p.panoptic_seg.astype(np.int32) for p in preds]) if preds else np.zeros((0, 0, 0), np.int32)
        info = [json.dumps(_served_segments(p)).encode() for p in preds]
        return [Tensor("panoptic_seg", "INT32", seg), Tensor("segments_info", "BYTES", np.array(info, dtype=object))]

    def serve_json(self, pred, classes) -> dict:
        """Each segment with its class name and its pixels as a COCO RLE (the map, losslessly)."""
        from ..results import encode_rle

        info = _served_segments(pred)
        if info:
            for s, rle in zip(info, encode_rle(np.stack([pred.panoptic_seg == s["id"] for s in info]))):
                s["segmentation"] = rle
        return {"segments": info, "image_size": list(pred.image_hw)}

    legend_entries = 12

    def draw(self, image_bgr, pred, classes, score_threshold):
        """Each segment in its own colour (instances apart, stuff by class), outlined, with a
        legend of the largest segments."""
        import cv2

        from ..vis import legend

        seg = pred.panoptic_seg
        info = sorted(pred.segments_info or [], key=lambda s: -s.get("area", 0))
        colors = palette(len(info) + 1, seed=11)
        colored = np.zeros_like(image_bgr)
        for n, s in enumerate(info):
            colored[seg == s["id"]] = colors[n]
        img = cv2.addWeighted(image_bgr.copy(), 0.45, colored, 0.55, 0)
        edges = np.zeros(seg.shape, bool)  # segment boundaries, in white
        edges[1:] |= seg[1:] != seg[:-1]
        edges[:, 1:] |= seg[:, 1:] != seg[:, :-1]
        img[edges] = 255
        total = seg.size
        entries = [(f"{s.get('category_name', s['category_id'])} {100.0 * s.get('area', 0) / total:.0f}%", colors[n])
                   for n, s in enumerate(info[: self.legend_entries])]
        return legend(img, entries)

    def agreement(self, refs: Sequence[Prediction], gots: Sequence[Prediction], spec: dict) -> Agreement:
        num_things = len(spec.get("classes") or [])
        total = PQStat()
        per_input = []
        for ref, got in zip(refs, gots):
            if ref.panoptic_seg.shape != got.panoptic_seg.shape:
                per_input.append({"pq": 0.0, "note": f"shape {got.panoptic_seg.shape} != {ref.panoptic_seg.shape}"})
                continue
            stat = pq_single(ref.panoptic_seg, segments(ref, num_things), got.panoptic_seg, segments(got, num_things))
            total.add(stat)
            cats = {c: True for c in stat.per_cat}
            one = stat.average(cats)[0]
            per_input.append({"pq": 1.0 if one["pq"] is None else one["pq"],
                              "segments_reference": len(ref.segments_info or []),
                              "segments_backend": len(got.segments_info or []),
                              "pixel_agreement": _pixel_agreement(ref, got)})
        overall = total.average({c: True for c in total.per_cat})[0]
        metrics = {k: (1.0 if overall[k] is None else overall[k]) for k in ("pq", "sq", "rq")}
        return Agreement(metrics, per_input, [])


def _served_segments(pred: Prediction) -> list[dict]:
    """id, category_id (thing: index into the bundle's `classes`; stuff: into its `stuff_classes`),
    category_name, isthing, area (counted on the map) and, for things, the instance's score."""
    ids, counts = np.unique(pred.panoptic_seg, return_counts=True)
    area = dict(zip(ids.tolist(), counts.tolist()))
    out = []
    for s in pred.segments_info or []:
        d = {"id": int(s["id"]), "category_id": int(s["category_id"]),
             "category_name": str(s.get("category_name", s["category_id"])), "isthing": bool(s["isthing"]),
             "area": int(area.get(int(s["id"]), 0))}
        if s.get("score") is not None:
            d["score"] = float(s["score"])
        out.append(d)
    return out


def _pixel_agreement(ref: Prediction, got: Prediction) -> float:
    """Fraction of pixels whose segment has the same category on both sides (void counts as one)."""
    def cats(p):
        lut = {s["id"]: (s["isthing"], s["category_id"]) for s in p.segments_info or []}
        out = np.full(p.panoptic_seg.shape, -1, np.int64)
        for i, (thing, c) in lut.items():
            out[p.panoptic_seg == i] = c + (0 if thing else 100000)
        return out

    return float((cats(ref) == cats(got)).mean())


register_task(PanopticSegmentationTask())
