"""COCO instances: a json with images/annotations/categories, images beside it or in images/.

Scores box AP and, when the model predicts masks and the annotations have them, mask AP; when it
predicts keypoints and the annotations have them, COCO keypoint AP (OKS).
Model classes map onto the json's category ids by name or through --class-map."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ...errors import UserError
from ...runtime.metrics.coco import coco_eval
from . import FORMATS, DatasetFormat, DatasetOptions, Sample, Scores, image_size, map_classes


class CocoDataset:
    format = "coco"

    def __init__(self, ann_path: Path, gt: dict, samples: list[Sample], class_map: Optional[Path]):
        self.ann_path = ann_path
        self.root = ann_path.parent
        self.gt = gt
        self.samples = samples
        self.class_map = class_map
        self.image_id = {im["file_name"]: im["id"] for im in gt["images"]}
        self.categories = {c["id"]: c["name"] for c in gt["categories"]}

    def describe(self) -> dict:
        return {"format": self.format, "annotations": str(self.ann_path), "images": len(self.samples),
                "instances": len(self.gt["annotations"]), "categories": len(self.categories)}

    def score(self, records: dict[str, dict], classes: list[str]) -> Scores:
        to_cat, notes = map_classes(classes, self.categories, self.class_map, str(self.ann_path))
        by_name = {n: i for i, n in enumerate(classes)}
        results, has_masks, has_keypoints = [], False, False
        for key, rec in records.items():
            iid = self.image_id[key]
            for d in rec.get("detections", []):
                idx = d.get("category_id")
                if idx is None and d.get("category_name") in by_name:
                    idx = by_name[d["category_name"]]
                if idx not in to_cat:
                    continue
                r = {"image_id": iid, "category_id": to_cat[idx], "bbox": d["bbox"], "score": d["score"]}
                if d.get("segmentation"):
                    r["segmentation"] = d["segmentation"]
                    has_masks = True
                if d.get("keypoints"):
                    r["keypoints"] = d["keypoints"]
                    has_keypoints = True
                results.append(r)
        gt_masks = any("segmentation" in a for a in self.gt["annotations"])
        kinds = ("bbox", "segm") if has_masks and gt_masks else ("bbox",)
        options = {}
        if has_keypoints and any(a.get("num_keypoints") for a in self.gt["annotations"]):
            kinds += ("keypoints",)
            options["oks_sigmas"] = _oks_sigmas(self.gt, notes)
        metrics, per_category = coco_eval(self.gt, results, kinds, image_ids=[self.image_id[k] for k in records],
                                          **options)
        # in percent, as detectron2's COCOEvaluator prints them
        tables = {f"per-category {kind} AP (%)": {self.categories[c]: {"AP": None if ap is None else 100.0 * ap}
                                                   for c, ap in aps.items() if c in self.categories}
                  for kind, aps in per_category.items()}
        return Scores(metrics, tables=tables, notes=notes)


def _oks_sigmas(gt: dict, notes: list) -> list[float]:
    """COCO's person sigmas for 17 keypoints; otherwise a uniform sigma, said in the notes."""
    from ...runtime.coco_keypoints import OKS_SIGMAS
    from ...runtime.tasks.keypoints import DEFAULT_SIGMA

    k = next(len(a["keypoints"]) // 3 for a in gt["annotations"] if a.get("keypoints"))
    if k == len(OKS_SIGMAS):
        return list(OKS_SIGMAS)
    notes.append(f"{k} keypoints per instance: OKS with a uniform sigma {DEFAULT_SIGMA} (COCO's are for 17)")
    return [DEFAULT_SIGMA] * k


def _detect(spec: Path) -> bool:
    return spec.is_file() and spec.suffix.lower() == ".json"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise UserError(f"{path}: not a COCO instances file (needs lists 'images', 'annotations', 'categories')")
    return data


def _find_image(file_name: str, dirs: list[Path]) -> Optional[Path]:
    for d in dirs:
        p = d / file_name
        if p.is_file():
            return p
    return None


def _area(ann: dict, h: int, w: int) -> float:
    seg = ann.get("segmentation")
    if seg:
        from pycocotools import mask as mask_util

        if isinstance(seg, list):
            rle = mask_util.merge(mask_util.frPyObjects(seg, h, w))
        elif isinstance(seg.get("counts"), list):
            rle = mask_util.frPyObjects(seg, h, w)
        else:
            rle = seg
        return float(mask_util.area(rle))
    return float(ann["bbox"][2] * ann["bbox"][3])


def open_coco(spec: Path, options: DatasetOptions) -> CocoDataset:
    data = _read_json(spec)
    dirs = ([options.images_dir] if options.images_dir else []) + [spec.parent, spec.parent / "images"]
    categories = {}
    for c in data["categories"]:
        if "id" not in c or "name" not in c:
            raise UserError(f"{spec}: a category without 'id' or 'name': {c}")
        categories[c["id"]] = c["name"]
    images, samples, missing, sizes = [], [], [], {}
    seen = set()
    for im in sorted(data["images"], key=lambda im: im.get("id", 0)):
        if "id" not in im or "file_name" not in im:
            raise UserError(f"{spec}: an image entry without 'id' or 'file_name': {im}")
        if im["file_name"] in seen:
            raise UserError(f"{spec}: file_name {im['file_name']!r} is listed twice")
        seen.add(im["file_name"])
        path = _find_image(im["file_name"], dirs)
        if path is None:
            missing.append(im["file_name"])
            continue
        im = dict(im)
        if "height" not in im or "width" not in im:
            im["height"], im["width"] = image_size(path)
        sizes[im["id"]] = (im["height"], im["width"])
        images.append(im)
        samples.append(Sample(im["file_name"], path))
    if missing:
        raise UserError(f"{spec}: image {missing[0]!r} not found in {' or '.join(str(d) for d in dirs)}"
                        + (f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""))
    annotations = []
    for k, a in enumerate(data["annotations"]):
        aid = a.get("id", k + 1)
        if a.get("category_id") not in categories:
            raise UserError(f"{spec}: annotation {aid} has category_id {a.get('category_id')!r}, which is not "
                            f"among the file's categories")
        if a.get("image_id") not in sizes:
            raise UserError(f"{spec}: annotation {aid} refers to image_id {a.get('image_id')!r}, which is not in 'images'")
        if "bbox" not in a or len(a["bbox"]) != 4:
            raise UserError(f"{spec}: annotation {aid} has no [x, y, w, h] bbox")
        a = dict(a, id=aid, iscrowd=a.get("iscrowd", 0))
        if "area" not in a:
            a["area"] = _area(a, *sizes[a["image_id"]])
        annotations.append(a)
    ids = [a["id"] for a in annotations]
    if len(set(ids)) != len(ids) or any(not isinstance(i, int) or i <= 0 for i in ids):
        # pycocotools treats id 0 as "unmatched": renumber rather than mis-score
        annotations = [dict(a, id=k + 1) for k, a in enumerate(annotations)]
    gt = {"images": images, "annotations": annotations, "categories": data["categories"]}
    return CocoDataset(spec, gt, samples, options.class_map)


FORMATS.register("coco", DatasetFormat("coco", _detect, open_coco, ("detection", "instance_segmentation", "keypoints"),
                                        detect_order=10))
