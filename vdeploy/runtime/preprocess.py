"""Host-side preprocessing, exactly as the training frameworks do it, from deploy.json's spec.

`preprocess(image_bgr, spec, input_size)` returns the graph inputs and the metadata the
postprocessing needs to map outputs back onto the original image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BundleError


@dataclass
class Prepared:
    inputs: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


def shortest_edge_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge output size, including its `int(x + 0.5)` rounding."""
    scale = short * 1.0 / min(h, w)
    newh, neww = (short * 1.0, scale * w) if h < w else (scale * h, short * 1.0)
    if max(newh, neww) > max_size:
        s = max_size * 1.0 / max(newh, neww)
        newh, neww = newh * s, neww * s
    return int(newh + 0.5), int(neww + 0.5)


def resize(image: np.ndarray, h: int, w: int, interp: str) -> np.ndarray:
    if image.shape[:2] == (h, w):
        return image
    if interp == "pil_bilinear":
        # detectron2 resizes uint8 images with PIL; PIL's filter differs from OpenCV's when shrinking.
        from PIL import Image

        return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    import cv2

    flags = {"cv2_linear": cv2.INTER_LINEAR, "cv2_cubic": cv2.INTER_CUBIC, "cv2_area": cv2.INTER_AREA,
             "cv2_nearest": cv2.INTER_NEAREST}
    if interp not in flags:
        raise BundleError(f"unknown resize interpolation {interp!r}")
    return cv2.resize(image, (w, h), interpolation=flags[interp])


def _target_size(h: int, w: int, rs: dict, input_size) -> tuple[int, int, tuple[int, int, int, int] | None]:
    """(resized h, w, crop box or None) for one image under the resize policy."""
    kind = rs.get("type", "none")
    if input_size is not None and rs.get("letterbox") == "fill":
        # the image fills the fixed canvas, enlarged or shrunk, aspect ratio kept
        H, W = input_size
        s = min(H / h, W / w)
        return min(H, max(1, int(h * s + 0.5))), min(W, max(1, int(w * s + 0.5))), None
    if kind == "shortest_edge":
        nh, nw = shortest_edge_size(h, w, rs["min_size"], rs["max_size"])
    elif kind == "fixed":
        return rs["height"], rs["width"], None
    elif kind == "shorter_center_crop":
        size, crop = rs["size"], rs["crop"]
        # torchvision Resize(int): the shorter side becomes `size`, the other is truncated.
        nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
        top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))
        return nh, nw, (top, left, crop, crop)
    elif kind == "none":
        nh, nw = h, w
    else:
        raise BundleError(f"unknown resize type {kind!r}")
    if input_size is not None:  # letterbox: shrink further until it fits the fixed canvas
        H, W = input_size
        if nh > H or nw > W:
            s = min(H / nh, W / nw)
            nh, nw = max(1, int(nh * s)), max(1, int(nw * s))
    return nh, nw, None


def preprocess(image_bgr: np.ndarray, spec: dict, input_size=None) -> Prepared:
    """One BGR uint8 image -> graph inputs (batch of 1) and the metadata to undo the resize."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise BundleError(f"expected an HxWx3 uint8 image, got {image_bgr.shape} {image_bgr.dtype}")
    pre = spec["preprocess"]
    inp = spec["inputs"][0]
    img = image_bgr if inp.get("color", "BGR") == "BGR" else image_bgr[:, :, ::-1]
    h, w = img.shape[:2]
    nh, nw, crop = _target_size(h, w, pre.get("resize", {"type": "none"}), input_size)
    img = resize(np.ascontiguousarray(img), nh, nw, pre.get("resize", {}).get("interp", "cv2_linear"))
    if crop is not None:
        t, l, ch, cw = crop
        img = img[t:t + ch, l:l + cw]
    vh, vw = img.shape[:2]
    x = img.astype(np.float32)
    norm = pre.get("normalize")
    pad_value = 0.0
    if norm:
        mean = np.asarray(norm["mean"], np.float32)
        std = np.asarray(norm["std"], np.float32)
        if norm.get("where", "graph") == "host":
            x = (x - mean) / std
        else:
            pad_value = mean  # normalises to exactly zero inside the graph
    if pre.get("pad", {}).get("value") is not None:  # stated by deploy.json (the same value, for exports)
        pad_value = np.asarray(pre["pad"]["value"], np.float32)
    H, W = _padded_size(vh, vw, pre.get("pad", {}), input_size)
    if (H, W) != (vh, vw):
        canvas = np.empty((H, W, 3), np.float32)
        canvas[...] = pad_value
        canvas[:vh, :vw] = x
        x = canvas
    inputs = {inp["name"]: np.ascontiguousarray(x.transpose(2, 0, 1)[None])}
    names = [i["name"] for i in spec["inputs"]]
    if "im_info" in names:
        inputs["im_info"] = np.array([[vh, vw]], np.float32)
    # Outputs come back in the coordinates of the (unpadded) resized image.
    meta = {"orig_hw": (h, w), "resized_hw": (vh, vw), "padded_hw": (H, W),
            "scale_xy": (w / vw, h / vh) if crop is None else (1.0, 1.0)}
    return Prepared(inputs, meta)


def _padded_size(h: int, w: int, pad: dict, input_size) -> tuple[int, int]:
    if input_size is not None:
        return int(input_size[0]), int(input_size[1])
    d = int(pad.get("size_divisibility", 0) or 0)
    if d > 1:
        return -(-h // d) * d, -(-w // d) * d
    return h, w


def stack(prepared: list[Prepared]) -> dict[str, np.ndarray]:
    """Batch several prepared images that share a shape (fixed-size, batchable graphs)."""
    names = prepared[0].inputs.keys()
    return {n: np.concatenate([p.inputs[n] for p in prepared], axis=0) for n in names}
