"""Prediction records: one JSON object per image, what `eval --out` keeps and what `from-bin`
writes, independent of any dataset (class ids are the model's own 0-based indices).

    detection / instance_segmentation: {"image": KEY, "detections": [{"category_id": i,
        "category_name": ..., "bbox": [x, y, w, h], "score": s, "segmentation": RLE}]}
    semantic_segmentation: {"image": KEY, "label_map": "labels/<n>.png"}  (relative to the file)
    embedding:             {"image": KEY, "features": base64 of little-endian float32}
    classification:        {"image": KEY, "topk": [{"class_id": i, "class_name": ..., "score": p}]}
    depth_estimation:      {"image": KEY, "depth_map": "depth/<n>.png", "depth_scale": 0.001}  (16-bit PNG,
                           value * depth_scale = metres, 0 = no depth; relative to the file)
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import UserError
from ..runtime.prediction import Prediction
from ..runtime.tasks import get_task


def to_record(pred: Prediction, key: str, classes: list[str], side_dir: Path | None) -> dict:
    """The record of one image, as its task writes it (a label map goes to a PNG under `side_dir`)."""
    return get_task(pred.task).record(pred, key, classes, side_dir)


SIDE_FILES = ("label_map", "panoptic_map", "depth_map")  # record fields that name a file beside the records


def resolve(rec: dict, base: Path) -> dict:
    """Make a record's side-file references absolute (they are stored relative to `base`)."""
    for key in SIDE_FILES:
        if key in rec and not Path(rec[key]).is_absolute():
            rec = dict(rec, **{key: str(base / rec[key])})
    return rec


def read_predictions(path: Path) -> list[dict]:
    """A predictions file: a JSON list of records, {"predictions": [records]}, JSON lines of
    records, or a flat COCO results list (one dict per detection with image/file_name); or a
    folder of what `vdeploy predict` writes for maps and embeddings (<stem>.png, <stem>.npy)
    (a PNG there is read as the dataset needs it: a label map, or a depth map in millimetres)."""
    if path.is_dir():
        return _folder_records(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: no such predictions file") from None
    try:
        if path.suffix == ".jsonl":
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, dict):
        data = data.get("predictions")
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a list of prediction records")
    records = [_keyed(r, path) for r in data]
    if records and "bbox" in records[0]:
        records = _group_detections(records)
    return [resolve(r, path.parent) for r in records]


# A PNG in a predictions folder says nothing of its task: it stands for a semantic label map and
# for a depth map in millimetres (what `vdeploy predict` writes for either), and each dataset
# reads the field it scores.
FOLDER_DEPTH_SCALE = 1e-3


def _folder_records(folder: Path) -> list[dict]:
    records = [{"image": p.stem, "label_map": str(p), "depth_map": str(p), "depth_scale": FOLDER_DEPTH_SCALE}
               for p in sorted(folder.glob("*.png"))]
    for p in sorted(folder.glob("*.npy")):
        f = np.load(p, allow_pickle=False).reshape(-1).astype("<f4")
        records.append({"image": p.stem, "features": base64.b64encode(f.tobytes()).decode("ascii")})
    if not records:
        raise UserError(f"{folder}: no label or depth maps (.png) or embeddings (.npy) in this folder")
    return records


def _keyed(rec, path: Path) -> dict:
    if not isinstance(rec, dict):
        raise UserError(f"{path}: a prediction record is not an object: {str(rec)[:80]}")
    key = rec.get("image", rec.get("file_name"))
    if key is None:
        raise UserError(f"{path}: a prediction record has neither 'image' nor 'file_name': {str(rec)[:80]}")
    return dict(rec, image=str(key))


def _group_detections(flat: Iterable[dict]) -> list[dict]:
    by_image: dict[str, list] = {}
    for d in flat:
        by_image.setdefault(d["image"], []).append({k: v for k, v in d.items() if k not in ("image", "file_name")})
    return [{"image": k, "detections": v} for k, v in by_image.items()]


def match_keys(records: list[dict], keys: list[str], source: Path) -> dict[str, dict]:
    """Records keyed by dataset sample key: exact key first, else a unique file-name match."""
    wanted = set(keys)
    by_base: dict[str, list[str]] = {}
    for k in keys:
        by_base.setdefault(Path(k).name, []).append(k)
    out = {}
    for r in records:
        k = r["image"]
        if k not in wanted:
            cands = by_base.get(Path(k).name, []) or by_base.get(Path(k).stem, [])
            if len(cands) != 1:
                continue
            k = cands[0]
        out[k] = r
    if not out:
        raise UserError(f"{source}: none of its {len(records)} records names an image of the dataset")
    return out
