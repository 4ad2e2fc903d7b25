"""Embeddings: relative L2 error of each sample's feature vector against PyTorch's (fast-reid's own
parity check is rtol 1e-3) and its cosine similarity; the worst sample is what is gated."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..prediction import Prediction
from . import register_task
from .base import Agreement, Gate, Task, Tensor


class EmbeddingTask(Task):
    name = "embedding"
    gates = (Gate("rel_l2", 1e-3, False, "worst ||backend - PyTorch|| / ||PyTorch|| over the samples"),
             Gate("cosine", 0.99999, True, "worst cosine similarity with PyTorch's features"))
    # cosine 0.999 is a relative L2 error of about sqrt(2 * 0.001) = 0.045
    reduced_precision = {p: {"cosine": 0.999, "rel_l2": 0.05} for p in ("bf16", "int8")}

    writes_json = False
    output_noun = "embeddings"

    def write_output(self, out_dir, name, pred) -> None:
        from ..io import atomic_save_npy

        atomic_save_npy(out_dir / f"{name}.npy", pred.features[None])

    def record(self, pred, key, classes, side_dir) -> dict:
        import base64

        f = np.ascontiguousarray(pred.features, dtype="<f4")
        return {"image": key, "features": base64.b64encode(f.tobytes()).decode("ascii")}

    def serve_outputs(self) -> list[dict]:
        return [{"name": "embedding", "datatype": "FP32", "shape": [-1, -1]}]

    def serve_tensors(self, preds) -> list[Tensor]:
        return [Tensor("embedding", "FP32", np.stack([np.asarray(p.features, np.float32).reshape(-1) for p in preds]))]

    def serve_json(self, pred, classes) -> dict:
        return {"embedding": np.asarray(pred.features, np.float32).reshape(-1).tolist()}

    def draw(self, image_bgr, pred, classes, score_threshold):
        """A re-ID crop is small: enlarged, captioned, with the embedding as a strip of bars."""
        import cv2

        from ..vis import caption

        img = image_bgr.copy()
        scale = max(1, 256 // max(img.shape[:2]))
        img = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
        f = pred.features
        strip = np.full((40, img.shape[1], 3), 255, np.uint8)
        bins = np.array_split(np.abs(f), img.shape[1])
        peak = max(float(np.abs(f).max()), 1e-12)
        for x, b in enumerate(bins):
            h = int(38 * float(b.mean()) / peak) if b.size else 0
            strip[40 - h:, x] = (200, 90, 40)
        return caption(np.vstack([img, strip]), f"D={f.size} |f|={np.linalg.norm(f):.1f}", size=0.4)

    def agreement(self, refs: Sequence[Prediction], gots: Sequence[Prediction], spec: dict) -> Agreement:
        per_input = []
        for ref, got in zip(refs, gots):
            a, b = ref.features.astype(np.float64).ravel(), got.features.astype(np.float64).ravel()
            if a.shape != b.shape:
                per_input.append({"rel_l2": float("inf"), "cosine": -1.0})
                continue
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            rel = float(np.linalg.norm(b - a) / na) if na > 0 else (0.0 if nb == 0 else float("inf"))
            cos = float(a @ b / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)
            per_input.append({"rel_l2": rel, "cosine": cos, "max_abs": float(np.abs(b - a).max(initial=0.0))})
        return Agreement({"rel_l2": max(r["rel_l2"] for r in per_input),
                          "cosine": min(r["cosine"] for r in per_input)}, per_input, [])


register_task(EmbeddingTask())
