"""Semantic segmentation: agreement of the backend's label maps with PyTorch's, at image size,
as pixel agreement and as mIoU with PyTorch's map as the label (over all inputs together)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..metrics.segmentation import confusion, segmentation_metrics
from ..prediction import Prediction
from ..vis import palette
from . import register_task
from .base import Agreement, Gate, Task, Tensor


class SemanticSegmentationTask(Task):
    name = "semantic_segmentation"
    gates = (Gate("pixel_agreement", 0.999, True, "fraction of pixels with the same label as PyTorch's"),
             Gate("miou", 0.99, True, "mIoU of the backend's label maps with PyTorch's as the label"))
    reduced_precision = {p: {"pixel_agreement": 0.99, "miou": 0.95} for p in ("bf16", "int8")}

    writes_json = False
    output_noun = "label maps"

    def write_output(self, out_dir, name, pred) -> None:
        from ..io import atomic_write_image
        from ..results import label_map_array

        atomic_write_image(out_dir / f"{name}.png", label_map_array(pred.label_map))

    def record(self, pred, key, classes, side_dir) -> dict:
        """The label map goes to a PNG under `side_dir`; the record names it relative to that folder."""
        from ..io import atomic_write_image
        from ..results import label_file_name, label_map_array

        if side_dir is None:
            raise ValueError("semantic records need a folder for their label maps")
        name = label_file_name(key)
        atomic_write_image(side_dir / "labels" / name, label_map_array(pred.label_map))
        return {"image": key, "label_map": f"labels/{name}"}

    legend_entries = 12  # the classes covering most of the picture

    def serve_outputs(self) -> list[dict]:
        return [{"name": "label_map", "datatype": "BYTES", "shape": [-1]}]

    def serve_tensors(self, preds) -> list[Tensor]:
        from ..results import encode_label_map

        return [Tensor("label_map", "BYTES", np.array([encode_label_map(p.label_map) for p in preds], dtype=object))]

    def draw(self, image_bgr, pred, classes, score_threshold):
        """The label map over the photo in class colours, with a legend of the largest classes."""
        import cv2

        from ..vis import legend

        colors = palette(max(len(classes), int(pred.label_map.max()) + 1))
        img = cv2.addWeighted(image_bgr.copy(), 0.4, colors[pred.label_map], 0.6, 0)
        ids, counts = np.unique(pred.label_map, return_counts=True)
        order = ids[np.argsort(-counts, kind="stable")][: self.legend_entries]
        total = pred.label_map.size
        entries = [(f"{classes[c] if c < len(classes) else c} {100.0 * counts[ids == c][0] / total:.0f}%", colors[c])
                   for c in order]
        return legend(img, entries)

    def agreement(self, refs: Sequence[Prediction], gots: Sequence[Prediction], spec: dict) -> Agreement:
        n = max([len(spec.get("classes") or [])] + [int(p.label_map.max()) + 1 for p in (*refs, *gots) if p.label_map.size])
        total_cm = np.zeros((n, n + 1), np.int64)
        same = pixels = 0
        per_input = []
        for ref, got in zip(refs, gots):
            if ref.label_map.shape != got.label_map.shape:
                per_input.append({"pixel_agreement": 0.0, "note": f"shape {got.label_map.shape} != {ref.label_map.shape}"})
                pixels += ref.label_map.size
                continue
            eq = int((ref.label_map == got.label_map).sum())
            cm = confusion(got.label_map, ref.label_map, n, ignore_index=-1)
            total_cm += cm
            same, pixels = same + eq, pixels + ref.label_map.size
            per_input.append({"pixel_agreement": eq / max(ref.label_map.size, 1),
                              "miou": segmentation_metrics(cm)[0]["mIoU"] or 1.0,
                              "classes_in_reference": int(len(np.unique(ref.label_map)))})
        miou = segmentation_metrics(total_cm)[0]["mIoU"]
        return Agreement({"pixel_agreement": same / max(pixels, 1), "miou": 1.0 if miou is None else miou}, per_input, [])


register_task(SemanticSegmentationTask())
