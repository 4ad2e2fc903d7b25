"""Classification: the backend's top-1 class must be PyTorch's, and its probabilities close.

Two classes whose reference probabilities differ by less than the probability gate are a tie: a
flip between them is within the engines' noise, not a disagreement."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..prediction import Prediction
from . import register_task
from .base import Agreement, Gate, Task, Tensor


class ClassificationTask(Task):
    name = "classification"
    gates = (Gate("top1_agreement", 1.0, True, "fraction of inputs whose top-1 class is PyTorch's"),
             Gate("prob_abs", 1e-3, False, "largest |probability difference| with PyTorch"))
    reduced_precision = {p: {"top1_agreement": 0.99, "prob_abs": 0.05} for p in ("bf16", "int8")}

    output_noun = "images classified"

    def json_results(self, pred, name, classes) -> list[dict]:
        from ..results import classification_result

        return [classification_result(pred, name, classes)]

    def record(self, pred, key, classes, side_dir) -> dict:
        from ..results import classification_result

        rec = classification_result(pred, key, classes)
        rec.pop("file_name", None)
        return {"image": key, **rec}

    def serve_outputs(self) -> list[dict]:
        return [{"name": "probs", "datatype": "FP32", "shape": [-1, -1]}]

    def serve_tensors(self, preds) -> list[Tensor]:
        return [Tensor("probs", "FP32", np.stack([np.asarray(p.probs, np.float32).reshape(-1) for p in preds]))]

    def serve_json(self, pred, classes) -> dict:
        order = np.argsort(-pred.probs)[:5]
        return {"classes": [{"class_id": int(i), "class_name": classes[i] if i < len(classes) else str(i),
                             "score": float(pred.probs[i])} for i in order]}

    def draw(self, image_bgr, pred, classes, score_threshold):
        from ..vis import caption

        k = int(pred.probs.argmax())
        return caption(image_bgr.copy(), f"{classes[k] if k < len(classes) else k}: {pred.probs[k]:.2f}")

    def agreement(self, refs: Sequence[Prediction], gots: Sequence[Prediction], spec: dict) -> Agreement:
        tie = dict((g.metric, g.threshold) for g in self.gates)["prob_abs"]
        per_input, notes = [], []
        for ref, got in zip(refs, gots):
            p, q = ref.probs.astype(np.float64), got.probs.astype(np.float64)
            i, j = int(p.argmax()), int(q.argmax())
            agree = i == j or p[i] - p[j] < tie
            if i != j and agree:
                notes.append(f"top-1 {i} vs {j} within {tie:g} of each other in PyTorch's probabilities: a tie")
            per_input.append({"top1_agreement": float(agree), "prob_abs": float(np.abs(p - q).max(initial=0.0))})
        return Agreement({"top1_agreement": float(np.mean([r["top1_agreement"] for r in per_input])),
                          "prob_abs": max(r["prob_abs"] for r in per_input)}, per_input, notes)


register_task(ClassificationTask())
