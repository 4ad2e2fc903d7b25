"""COCO panoptic: a json whose annotations carry `segments_info` (panoptic_val2017.json), its PNGs
in the folder of the same name beside it (panoptic_val2017/), the photos beside the json or in
images/ (or --images-dir).

Scores PQ, SQ and RQ over all categories, things and stuff (panopticapi's pq_compute, see
vdeploy.runtime.metrics.panoptic). A predicted segment's category maps onto the json's by name
(COCO panoptic's "-other" / "-merged" suffixes ignored); a segment whose category the json lacks
is left out as void and said in the notes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import UserError
from ...runtime.metrics.panoptic import PQStat, pq_single, rgb_to_id
from . import FORMATS, DatasetFormat, DatasetOptions, Sample, Scores, normalize_name


def _key(name: str) -> str:
    return normalize_name(name.replace("-other", "").replace("-merged", ""))


def _read_ids(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"{path}: not a readable panoptic PNG")
    return rgb_to_id(img[..., ::-1])


class CocoPanopticDataset:
    format = "coco_panoptic"

    def __init__(self, ann_path: Path, png_dir: Path, data: dict, samples: list[Sample]):
        self.ann_path, self.png_dir, self.samples = ann_path, png_dir, samples
        by_id = {im["id"]: im for im in data["images"]}
        self.annotations = {by_id[a["image_id"]]["file_name"]: a for a in data["annotations"]}
        self.categories = {c["id"]: c for c in data["categories"]}

    def describe(self) -> dict:
        return {"format": self.format, "annotations": str(self.ann_path), "panoptic_pngs": str(self.png_dir),
                "images": len(self.samples), "categories": len(self.categories)}

    def score(self, records: dict[str, dict], classes: list[str]) -> Scores:
        by_name = {(bool(c.get("isthing")), _key(c["name"])): cid for cid, c in self.categories.items()}
        total, unmapped = PQStat(), set()
        for key, rec in records.items():
            ann = self.annotations[key]
            gt_ids = _read_ids(self.png_dir / ann["file_name"])
            pred_ids = _read_ids(Path(rec["panoptic_map"]))
            segments = []
            for s in rec.get("segments_info", []):
                name = s.get("category_name")
                if name is None and s["isthing"] and 0 <= s["category_id"] < len(classes):
                    name = classes[s["category_id"]]
                cid = by_name.get((bool(s["isthing"]), _key(str(name))))
                if cid is None:
                    unmapped.add(str(name))
                    pred_ids[pred_ids == s["id"]] = 0  # void: neither matched nor a false positive
                    continue
                segments.append({"id": s["id"], "category_id": cid})
            try:
                total.add(pq_single(gt_ids, ann["segments_info"], pred_ids, segments))
            except ValueError as e:
                raise UserError(f"prediction for {key}: {e}") from None
        isthing = {cid: bool(c.get("isthing")) for cid, c in self.categories.items()}
        metrics, tables = {}, {}
        for suffix, which in (("", None), ("_th", True), ("_st", False)):
            avg, per_class = total.average(isthing, which)
            metrics.update({f"{k.upper()}{suffix}": avg[k] for k in ("pq", "sq", "rq")})
            if which is None:
                tables["per-category PQ (%)"] = {self.categories[c]["name"]: {k.upper(): 100.0 * v[k] for k in v}
                                                for c, v in per_class.items() if c in total.per_cat}
        notes = [f"predicted categories not in the dataset, left out as void: {', '.join(sorted(unmapped))}"] if unmapped else []
        return Scores(metrics, tables=tables, notes=notes)


def _is_panoptic_json(spec: Path) -> bool:
    if not (spec.is_file() and spec.suffix.lower() == ".json"):
        return False
    try:
        data = json.loads(spec.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False
    anns = data.get("annotations") if isinstance(data, dict) else None
    return bool(anns) and isinstance(anns, list) and isinstance(anns[0], dict) and "segments_info" in anns[0]


def open_coco_panoptic(spec: Path, options: DatasetOptions) -> CocoPanopticDataset:
    try:
        data = json.loads(spec.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{spec}: not valid JSON ({e})") from None
    for k in ("images", "annotations", "categories"):
        if not isinstance(data.get(k), list):
            raise UserError(f"{spec}: not a COCO panoptic file (needs a list {k!r})")
    png_dir = spec.with_suffix("")
    if not png_dir.is_dir():
        raise UserError(f"{spec}: the folder of its panoptic PNGs, {png_dir}, does not exist")
    dirs: list[Path] = ([options.images_dir] if options.images_dir else []) + [spec.parent, spec.parent / "images"]
    annotated = {a["image_id"] for a in data["annotations"]}
    samples, missing = [], []
    for im in sorted(data["images"], key=lambda im: im["id"]):
        if im["id"] not in annotated:
            continue
        path = next((d / im["file_name"] for d in dirs if (d / im["file_name"]).is_file()), None)
        if path is None:
            missing.append(im["file_name"])
            continue
        samples.append(Sample(im["file_name"], path))
    if missing:
        raise UserError(f"{spec}: image {missing[0]!r} not found in {' or '.join(str(d) for d in dirs)}"
                        + (f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""))
    return CocoPanopticDataset(spec, png_dir, data, samples)


FORMATS.register("coco_panoptic", DatasetFormat("coco_panoptic", _is_panoptic_json, open_coco_panoptic,
                                                ("panoptic_segmentation",), detect_order=5))
