"""Predictions -> files: COCO results JSON, PNG label maps, .npy embeddings, JSON classes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .prediction import Prediction


def encode_rle(masks: np.ndarray) -> list[dict]:
    """N x H x W bool -> COCO RLE dicts with string counts (pycocotools' encoding)."""
    from pycocotools import mask as mask_util

    if masks.shape[0] == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def to_coco_results(pred: Prediction, file_name: str, classes: list[str] | None = None) -> list[dict]:
    """COCO results format; `category_id` is the model's 0-based contiguous class index."""
    out = []
    rles = encode_rle(pred.masks) if pred.masks is not None else None
    for i in range(len(pred)):
        x1, y1, x2, y2 = (float(v) for v in pred.boxes[i])
        c = int(pred.classes[i])
        r = {"file_name": file_name, "category_id": c, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(pred.scores[i])}
        if classes is not None and 0 <= c < len(classes):
            r["category_name"] = classes[c]
        if rles is not None:
            r["segmentation"] = rles[i]
        if pred.keypoints is not None:
            r["keypoints"] = coco_keypoints(pred.keypoints[i])
        out.append(r)
    return out


def coco_keypoints(kps: np.ndarray) -> list[float]:
    """K x 3 (x, y, score) -> COCO's flat [x1, y1, s1, ...] with x, y as pixel indices: 0.5 less
    than the continuous coordinates, as detectron2's instances_to_coco_json writes them."""
    k = np.asarray(kps, np.float64).copy()
    k[:, :2] -= 0.5
    return [float(v) for v in k.reshape(-1)]


def classification_result(pred: Prediction, file_name: str, classes: list[str], topk: int = 5) -> dict:
    order = np.argsort(-pred.probs)[:topk]
    return {"file_name": file_name,
            "topk": [{"class_id": int(i), "class_name": classes[i] if i < len(classes) else str(i),
                      "score": float(pred.probs[i])} for i in order]}


def output_stem(file_name: str) -> str:
    return Path(file_name).stem


def label_map_array(label_map: np.ndarray) -> np.ndarray:
    """A label map as PNG pixels: 8-bit while the class indices fit, 16-bit beyond 255."""
    return label_map.astype(np.uint8 if int(label_map.max(initial=0)) < 256 else np.uint16)


def label_file_name(key: str) -> str:
    """A flat, collision-free PNG name for a sample key (keys may hold '/')."""
    import hashlib

    stem = Path(key).stem.replace("/", "_")[:80]
    return f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.png"


def encode_label_map(label_map: np.ndarray) -> bytes:
    """A label map as PNG bytes of class indices (label_map_array's bit depth)."""
    import cv2

    ok, buf = cv2.imencode(".png", label_map_array(label_map))
    if not ok:
        raise RuntimeError("PNG encoding of a label map failed")
    return buf.tobytes()
