"""Host-side postprocessing: raw graph outputs of one image -> a Prediction in original pixels."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ...registry import Registry
from ..prediction import Prediction
from .keypoints import heatmaps_to_keypoints
from .masks import PASTERS
from .panoptic import combine_semantic_and_instances

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
    if "num_detections" in raw:  # static outputs: only the leading rows are detections
        n = int(np.asarray(raw["num_detections"]).reshape(-1)[0])
        raw = {k: (v if k == "num_detections" else v[:n]) for k, v in raw.items()}
    graph_boxes = raw["boxes"].reshape(-1, 4).astype(np.float32)
    boxes = graph_boxes * np.array([sx, sy, sx, sy], np.float32)
    scores = raw["scores"].reshape(-1).astype(np.float32)
    classes = raw["classes"].reshape(-1).astype(np.int64)
    masks = raw.get("mask_probs")
    if pp.get("clip", True):
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    # strict, as detectron2's and torchvision's score filters are; a real detection never scores 0
    # (OpenVINO answers an empty result with one uninitialised row of score 0)
    keep = scores > pp.get("score_threshold", 0.0)
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
    keypoints = None
    if "keypoint_heatmaps" in raw:
        # decoded in the boxes the heads ran in (resized-image pixels), then scaled as detectron2's
        # detector_postprocess scales them
        heatmaps = raw["keypoint_heatmaps"]
        keypoints = heatmaps_to_keypoints(heatmaps.reshape((-1,) + heatmaps.shape[-3:])[idx], graph_boxes[idx])
        keypoints[:, :, :2] *= np.array([sx, sy], np.float32)
    return Prediction(spec["task"], (h, w), boxes=boxes, scores=scores, classes=classes, masks=pasted,
                      keypoints=keypoints)


@POSTPROCESSORS.register("panoptic")
def panoptic(raw, meta, spec) -> Prediction:
    """PanopticFPN: the detections (masks pasted) and the semantic label map at image size, then
    detectron2's combination of the two into panoptic segments."""
    pp = spec["postprocess"]
    pred = detection(raw, meta, spec)
    sem_spec = {"task": spec["task"], "outputs": [{"name": "sem_seg_logits"}],
                "postprocess": {"align_corners": pp.get("align_corners", False)}}
    pred.label_map = semantic_segmentation({"sem_seg_logits": raw["sem_seg_logits"]}, meta, sem_spec).label_map
    masks = pred.masks if pred.masks is not None else np.zeros((0,) + pred.label_map.shape, bool)
    pred.panoptic_seg, pred.segments_info = combine_semantic_and_instances(
        masks, pred.scores, pred.classes, pred.label_map, overlap_threshold=pp["overlap_threshold"],
        stuff_area_threshold=pp["stuff_area_threshold"], instances_score_threshold=pp["instances_score_threshold"])
    names = {True: spec.get("classes") or [], False: spec.get("stuff_classes") or []}
    for s in pred.segments_info:
        c, known = s["category_id"], names[s["isthing"]]
        s["category_name"] = known[c] if 0 <= c < len(known) else str(c)
    return pred


@POSTPROCESSORS.register("semantic_segmentation")
def semantic_segmentation(raw, meta, spec) -> Prediction:
    """Logits over the fed image -> crop the valid region -> bilinear to the original -> argmax
    (MMSegmentation's postprocess_result; ties go to the lowest class index)."""
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
    x = np.ascontiguousarray(logits[:, :ch, :cw], dtype=np.float32)
    if (ch, cw) != (h, w):
        x = resize_bilinear_chw(x, h, w, spec["postprocess"].get("align_corners", False))
    return Prediction(spec["task"], (h, w), label_map=x.argmax(axis=0).astype(np.int32))


def resize_bilinear_chw(x: np.ndarray, h: int, w: int, align_corners: bool) -> np.ndarray:
    """C x h x w -> C x H x W, PyTorch's bilinear semantics for either align_corners."""
    import cv2

    if not align_corners:
        # half-pixel bilinear == cv2 INTER_LINEAR on float32; OpenCV takes at most 128 channels a call
        hwc = x.transpose(1, 2, 0)
        parts = [cv2.resize(np.ascontiguousarray(hwc[:, :, i:i + 128]), (w, h), interpolation=cv2.INTER_LINEAR)
                 .reshape(h, w, -1) for i in range(0, hwc.shape[2], 128)]
        return np.concatenate(parts, axis=2).transpose(2, 0, 1)

    def taps(out_n: int, in_n: int):
        src = np.arange(out_n, dtype=np.float64) * ((in_n - 1) / (out_n - 1) if out_n > 1 else 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), in_n - 1)
        return i0, np.minimum(i0 + 1, in_n - 1), (src - i0).astype(np.float32)

    y0, y1, fy = taps(h, x.shape[1])
    x0, x1, fx = taps(w, x.shape[2])
    rows = x[:, y0] * (1 - fy)[None, :, None] + x[:, y1] * fy[None, :, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :] + rows[:, :, x1] * fx[None, None, :]


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


@POSTPROCESSORS.register("depth_estimation")
def depth_estimation(raw, meta, spec) -> Prediction:
    """Depth over the fed image -> crop the valid region -> bilinear to the original photo
    (MMSegmentation's DepthEstimator.postprocess_result)."""
    h, w = meta["orig_hw"]
    depth = np.asarray(raw["depth"], dtype=np.float32)
    depth = depth.reshape(depth.shape[-2:])
    vh, vw = meta["resized_hw"]
    ph, pw = meta.get("padded_hw", (vh, vw))
    dh, dw = depth.shape
    ch, cw = int(round(dh * vh / ph)), int(round(dw * vw / pw))
    x = np.ascontiguousarray(depth[None, :ch, :cw])
    if (ch, cw) != (h, w):
        x = resize_bilinear_chw(x, h, w, spec["postprocess"].get("align_corners", False))
    return Prediction(spec["task"], (h, w), depth_map=x[0].astype(np.float32, copy=False))
