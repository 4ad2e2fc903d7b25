"""Monocular depth estimation: agreement of the backend's depth maps with PyTorch's, at the photo's
size, in the figures depth users read: the mean relative error (abs_rel, with PyTorch's depth as
the reference, as a depth benchmark takes the ground truth) and the share of pixels within 1% of it.

Depth maps leave the runtime as 16-bit PNGs of millimetres (NYU's and MMSegmentation's format;
65.535 m at most, 1 mm steps), beside the float32 metres of the Python API.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..prediction import Prediction
from . import register_task
from .base import Agreement, Gate, Task, Tensor

DEPTH_PNG_SCALE = 1e-3  # metres per PNG unit
_EPS = 1e-6             # metres: a reference depth at or under this is compared as this


def depth_png_array(depth: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres (rounded; clipped to 0..65535, NaN to 0, which means no depth)."""
    mm = np.nan_to_num(np.asarray(depth, np.float64) / DEPTH_PNG_SCALE, nan=0.0, posinf=65535.0, neginf=0.0)
    return np.clip(np.rint(mm), 0, 65535).astype(np.uint16)


def encode_depth_png(depth: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", depth_png_array(depth))
    if not ok:
        raise RuntimeError("PNG encoding of a depth map failed")
    return buf.tobytes()


def relative_errors(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    a = np.maximum(np.asarray(ref, np.float64), _EPS)
    return np.abs(np.asarray(got, np.float64) - a) / a


class DepthEstimationTask(Task):
    name = "depth_estimation"
    gates = (Gate("abs_rel", 1e-3, False, "mean |backend - PyTorch| / PyTorch over all pixels of all inputs"),
             Gate("within_1pct", 0.999, True, "share of pixels whose depth is within 1% of PyTorch's"))
    # bf16 carries 8 bits of mantissa (0.4% per rounding); int8 moves features by a few percent
    reduced_precision = {p: {"abs_rel": 0.02, "within_1pct": 0.5} for p in ("bf16", "int8")}
    bench_hw = (480, 640)

    writes_json = False
    output_noun = "depth maps"

    def write_output(self, out_dir, name, pred) -> None:
        from ..io import atomic_write_image

        atomic_write_image(out_dir / f"{name}.png", depth_png_array(pred.depth_map))

    def record(self, pred, key, classes, side_dir) -> dict:
        """The depth map goes to a 16-bit PNG (millimetres) under `side_dir`; the record names it
        relative to that folder, with the scale back to metres."""
        from ..io import atomic_write_image
        from ..results import label_file_name

        if side_dir is None:
            raise ValueError("depth records need a folder for their depth maps")
        name = label_file_name(key)
        atomic_write_image(side_dir / "depth" / name, depth_png_array(pred.depth_map))
        return {"image": key, "depth_map": f"depth/{name}", "depth_scale": DEPTH_PNG_SCALE}

    def serve_outputs(self) -> list[dict]:
        return [{"name": "depth_map", "datatype": "BYTES", "shape": [-1]}]

    def serve_tensors(self, preds) -> list[Tensor]:
        return [Tensor("depth_map", "BYTES", np.array([encode_depth_png(p.depth_map) for p in preds], dtype=object))]

    def draw(self, image_bgr, pred, classes, score_threshold):
        """The photo beside its depth in colour (near: bright), captioned with the depth range."""
        import cv2

        from ..vis import caption

        d = np.asarray(pred.depth_map, np.float32)
        finite = d[np.isfinite(d)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        scaled = np.zeros(d.shape, np.uint8) if hi <= lo else \
            np.clip(255.0 * (hi - np.nan_to_num(d, nan=hi)) / (hi - lo), 0, 255).astype(np.uint8)
        colour = cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO)
        if colour.shape[:2] != image_bgr.shape[:2]:
            colour = cv2.resize(colour, (image_bgr.shape[1], image_bgr.shape[0]), interpolation=cv2.INTER_NEAREST)
        return caption(np.hstack([image_bgr.copy(), colour]), f"depth {lo:.2f}-{hi:.2f} m", size=0.5)

    def agreement(self, refs: Sequence[Prediction], gots: Sequence[Prediction], spec: dict) -> Agreement:
        total = within = 0
        rel_sum = 0.0
        per_input = []
        for ref, got in zip(refs, gots):
            a, b = ref.depth_map, got.depth_map
            if a.shape != b.shape:
                per_input.append({"abs_rel": float("inf"), "within_1pct": 0.0,
                                  "note": f"shape {b.shape} != {a.shape}"})
                total += a.size
                rel_sum = float("inf")
                continue
            rel = relative_errors(a, b)
            rel = np.where(np.isfinite(rel), rel, np.inf)
            n_within = int((rel <= 0.01).sum())
            total, within, rel_sum = total + rel.size, within + n_within, rel_sum + float(rel.sum())
            per_input.append({"abs_rel": float(rel.mean()) if rel.size else 0.0,
                              "within_1pct": n_within / max(rel.size, 1),
                              "max_rel": float(rel.max(initial=0.0)),
                              "rmse_m": float(np.sqrt(np.mean((b.astype(np.float64) - a) ** 2))) if a.size else 0.0,
                              "reference_depth_range_m": float(a.max(initial=0.0) - a.min(initial=0.0))})
        return Agreement({"abs_rel": rel_sum / max(total, 1), "within_1pct": within / max(total, 1)}, per_input, [])


register_task(DepthEstimationTask())
