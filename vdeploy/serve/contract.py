"""The served tensor contract (docs/serving.md): Predictions -> named output tensors and JSON.

Every served bundle takes one input, `image`: BYTES [B], each element an encoded image file.
Outputs by task (N: detections over the whole request, B: images in the request):

  detection              boxes FP32 [N,4] (x1,y1,x2,y2, original-image pixels), scores FP32 [N],
                         classes INT32 [N] (0-based), image_index INT32 [N] (which input image)
  instance_segmentation  the above + masks BYTES [N] (COCO RLE as JSON)
  keypoints              detection's + keypoints FP32 [N,K,3] (x, y, score in original-image pixels)
  semantic_segmentation  label_map BYTES [B] (PNG, 8- or 16-bit class indices)
  embedding              embedding FP32 [B,D]
  classification         probs FP32 [B,K]
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..runtime.prediction import Prediction

INPUT_NAME = "image"
DETECTION_TASKS = ("detection", "instance_segmentation", "keypoints")


@dataclass
class Tensor:
    name: str
    datatype: str        # Open Inference Protocol datatype: FP32, INT32, BYTES
    data: np.ndarray     # numeric, or an object array of bytes for BYTES


def output_types(task: str) -> list[dict]:
    """Model metadata outputs (-1: a dimension that varies per request)."""
    det = [{"name": "boxes", "datatype": "FP32", "shape": [-1, 4]},
           {"name": "scores", "datatype": "FP32", "shape": [-1]},
           {"name": "classes", "datatype": "INT32", "shape": [-1]},
           {"name": "image_index", "datatype": "INT32", "shape": [-1]}]
    return {
        "detection": det,
        "instance_segmentation": det + [{"name": "masks", "datatype": "BYTES", "shape": [-1]}],
        "keypoints": det + [{"name": "keypoints", "datatype": "FP32", "shape": [-1, -1, 3]}],
        "semantic_segmentation": [{"name": "label_map", "datatype": "BYTES", "shape": [-1]}],
        "embedding": [{"name": "embedding", "datatype": "FP32", "shape": [-1, -1]}],
        "classification": [{"name": "probs", "datatype": "FP32", "shape": [-1, -1]}],
    }[task]


def input_types() -> list[dict]:
    return [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}]


def to_tensors(task: str, preds: list[Prediction]) -> list[Tensor]:
    """The output tensors of one request, in `output_types(task)` order."""
    if task in DETECTION_TASKS:
        counts = [len(p) for p in preds]
        out = [
            Tensor("boxes", "FP32", _cat([p.boxes for p in preds], (0, 4), np.float32)),
            Tensor("scores", "FP32", _cat([p.scores for p in preds], (0,), np.float32)),
            Tensor("classes", "INT32", _cat([p.classes for p in preds], (0,), np.int32)),
            Tensor("image_index", "INT32", np.repeat(np.arange(len(preds), dtype=np.int32), counts)),
        ]
        if task == "instance_segmentation":
            rles = [json.dumps(r).encode() for p in preds for r in _rles(p)]
            out.append(Tensor("masks", "BYTES", np.array(rles, dtype=object).reshape(-1)))
        if task == "keypoints":
            k = max([p.keypoints.shape[1] for p in preds if p.keypoints is not None] or [0])
            out.append(Tensor("keypoints", "FP32", _cat([p.keypoints for p in preds], (0, k, 3), np.float32)))
        return out
    if task == "semantic_segmentation":
        return [Tensor("label_map", "BYTES", np.array([encode_label_map(p.label_map) for p in preds], dtype=object))]
    if task == "embedding":
        return [Tensor("embedding", "FP32", np.stack([np.asarray(p.features, np.float32).reshape(-1) for p in preds]))]
    if task == "classification":
        return [Tensor("probs", "FP32", np.stack([np.asarray(p.probs, np.float32).reshape(-1) for p in preds]))]
    raise ValueError(f"no serving contract for task {task!r}")


def to_json(task: str, pred: Prediction, classes: list[str]) -> dict:
    """The TorchServe-style JSON answer of /predictions/{model} for one image."""
    if task in DETECTION_TASKS:
        rles = _rles(pred) if task == "instance_segmentation" else None
        dets = []
        for i in range(len(pred)):
            c = int(pred.classes[i])
            d = {"class_id": c, "class_name": classes[c] if 0 <= c < len(classes) else str(c),
                 "score": float(pred.scores[i]), "bbox": [float(v) for v in pred.boxes[i]]}
            if rles is not None:
                d["segmentation"] = rles[i]
            if pred.keypoints is not None:
                d["keypoints"] = [[float(v) for v in kp] for kp in pred.keypoints[i]]
            dets.append(d)
        return {"detections": dets, "image_size": list(pred.image_hw)}
    if task == "embedding":
        return {"embedding": np.asarray(pred.features, np.float32).reshape(-1).tolist()}
    if task == "classification":
        order = np.argsort(-pred.probs)[:5]
        return {"classes": [{"class_id": int(i), "class_name": classes[i] if i < len(classes) else str(i),
                             "score": float(pred.probs[i])} for i in order]}
    raise ValueError(f"task {task!r} has no JSON answer")


def encode_label_map(label_map: np.ndarray) -> bytes:
    import cv2

    dtype = np.uint8 if int(label_map.max(initial=0)) < 256 else np.uint16
    ok, buf = cv2.imencode(".png", label_map.astype(dtype))
    if not ok:
        raise RuntimeError("PNG encoding of a label map failed")
    return buf.tobytes()


def encode_label_map_palette(label_map: np.ndarray, num_classes: int = 0) -> bytes:
    """A label map as a palette PNG: each pixel's index is its class (what PIL's `np.array(Image.open(f))`
    gives back), its colour the class colour of vdeploy's drawings, so the file shows the classes
    when opened. Past 256 classes a palette cannot hold them: 16-bit greyscale, as encode_label_map."""
    import io

    from PIL import Image

    from ..runtime.vis import palette

    top = int(label_map.max(initial=0))
    if top > 255 or int(label_map.min(initial=0)) < 0:
        return encode_label_map(label_map)
    colors = palette(max(num_classes, top + 1))[:256, ::-1]  # vdeploy's colours are BGR, a PNG palette RGB
    im = Image.fromarray(np.ascontiguousarray(label_map, dtype=np.uint8))
    im.putpalette(colors.astype(np.uint8).tobytes())  # an "L" image with a palette becomes "P"
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _rles(pred: Prediction) -> list[dict]:
    if pred.masks is None or len(pred) == 0:
        return []
    from ..runtime.results import encode_rle

    return encode_rle(pred.masks)


def _cat(parts, empty_shape, dtype) -> np.ndarray:
    parts = [np.asarray(p, dtype).reshape((-1,) + tuple(empty_shape[1:])) for p in parts if p is not None]
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(empty_shape, dtype)
