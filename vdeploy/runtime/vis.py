"""Drawings of predictions: boxes, masks and labels, or colour maps for label maps."""
from __future__ import annotations

import numpy as np

from .prediction import Prediction


def palette(n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(40, 255, size=(max(n, 1), 3), dtype=np.uint8)


def draw(image_bgr: np.ndarray, pred: Prediction, classes: list[str], score_threshold: float = 0.3) -> np.ndarray:
    import cv2

    img = image_bgr.copy()
    if pred.label_map is not None:
        colors = palette(max(len(classes), int(pred.label_map.max()) + 1))
        return cv2.addWeighted(img, 0.4, colors[pred.label_map], 0.6, 0)
    if pred.probs is not None:
        k = int(pred.probs.argmax())
        text = f"{classes[k] if k < len(classes) else k}: {pred.probs[k]:.2f}"
        cv2.putText(img, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
        return img
    if pred.boxes is None:
        return img
    colors = palette(len(classes) or 1)
    keep = np.nonzero(pred.scores >= score_threshold)[0]
    if pred.masks is not None:
        overlay = img.copy()
        for i in keep:
            overlay[pred.masks[i]] = colors[int(pred.classes[i]) % len(colors)]
        img = cv2.addWeighted(img, 0.5, overlay, 0.5, 0)
    for i in keep:
        x1, y1, x2, y2 = (int(round(float(v))) for v in pred.boxes[i])
        c = int(pred.classes[i])
        color = tuple(int(v) for v in colors[c % len(colors)])
        cv2.rectangle(img, (x1, y1), (x2, y2), color, 2)
        label = f"{classes[c] if c < len(classes) else c} {pred.scores[i]:.2f}"
        cv2.putText(img, label, (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
    return img
