"""Host-side postprocessing: raw graph outputs of one image -> a Prediction in original pixels."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ...registry import Registry
from ..prediction import Prediction
from .masks import PASTERS

Postprocessor = Callable[[dict, dict, dict], Prediction]
POSTPROCESSORS: Registry[Postprocessor] = Registry("postprocessing")


def postprocess(raw: dict[str, np.ndarray], meta: dict, spec: dict) -> Prediction:
    pp = spec["postprocess"]
    return POSTPROCESSORS.get(pp["type"])(raw, meta, spec)


@POSTPROCESSORS.register("detection")
def detection(raw, meta, spec) -> Prediction:
    """detectron2's detector_postprocess: scale per axis, clip, drop empty boxes, paste masks."""
    pp = spec["postprocess"]
    h, w = meta["orig_hw"]
    sx, sy = meta["scale_xy"]
    boxes = raw["boxes"].reshape(-1, 4).astype(np.float32) * np.array([sx, sy, sx, sy], np.float32)
    scores = raw["scores"].reshape(-1).astype(np.float32)
    classes = raw["classes"].reshape(-1).astype(np.int64)
    masks = raw.get("mask_probs")
    if pp.get("clip", True):
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    keep = scores >= pp.get("score_threshold", 0.0)
    if pp.get("drop_empty", True):
        keep &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    idx = np.nonzero(keep)[0]
    limit = pp.get("max_detections")
    if limit is not None and idx.size > limit:
        idx = idx[np.argsort(-scores[idx], kind="stable")[:limit]]
    boxes, scores, classes = boxes[idx], scores[idx], classes[idx]
    pasted = None
    if masks is not None:
        masks = masks.reshape(masks.shape[0], masks.shape[-2], masks.shape[-1])[idx]
        paste = PASTERS[pp.get("paste", "detectron2")]
        pasted = paste(masks, boxes, h, w, pp.get("mask_threshold", 0.5))
    return Prediction(spec["task"], (h, w), boxes=boxes, scores=scores, classes=classes, masks=pasted)


@POSTPROCESSORS.register("semantic_segmentation")
def semantic_segmentation(raw, meta, spec) -> Prediction:
    """Logits over the fed image -> crop the valid region -> bilinear to the original -> argmax."""
    import cv2

    h, w = meta["orig_hw"]
    logits = raw[spec["outputs"][0]["name"]]
    logits = logits[0] if logits.ndim == 4 else logits
    if logits.ndim == 2:  # the graph already gave a label map
        return Prediction(spec["task"], (h, w), label_map=logits.astype(np.int32))
    vh, vw = meta["resized_hw"]
    lh, lw = logits.shape[-2:]
    # the logits may be at a stride of the input; map the valid region proportionally
    ph, pw = meta.get("padded_hw", (vh, vw))
    ch, cw = int(round(lh * vh / ph)), int(round(lw * vw / pw))
    x = np.ascontiguousarray(logits[:, :ch, :cw].transpose(1, 2, 0), dtype=np.float32)
    if (ch, cw) != (h, w):
        # cv2 splits >512 channels poorly; resize in chunks of channels
        chunks = [cv2.resize(x[:, :, i:i + 256], (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
                  for i in range(0, x.shape[2], 256)]
        x = np.concatenate(chunks, axis=2)
    return Prediction(spec["task"], (h, w), label_map=x.argmax(axis=2).astype(np.int32))


@POSTPROCESSORS.register("embedding")
def embedding(raw, meta, spec) -> Prediction:
    f = raw[spec["outputs"][0]["name"]].reshape(-1).astype(np.float32)
    if spec["postprocess"].get("normalize"):
        f = f / max(float(np.linalg.norm(f)), 1e-12)
    return Prediction(spec["task"], tuple(meta["orig_hw"]), features=f)


@POSTPROCESSORS.register("classification")
def classification(raw, meta, spec) -> Prediction:
    z = raw[spec["outputs"][0]["name"]].reshape(-1).astype(np.float64)
    e = np.exp(z - z.max())
    return Prediction(spec["task"], tuple(meta["orig_hw"]), probs=(e / e.sum()).astype(np.float32))
