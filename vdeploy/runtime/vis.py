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
        return _caption(img, f"{classes[k] if k < len(classes) else k}: {pred.probs[k]:.2f}")
    if pred.features is not None:
        # a re-ID crop is small: enlarge it, caption it, and draw the embedding as a strip of bars
        scale = max(1, 256 // max(img.shape[:2]))
        img = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
        f = pred.features
        strip = np.full((40, img.shape[1], 3), 255, np.uint8)
        bins = np.array_split(np.abs(f), img.shape[1])
        peak = max(float(np.abs(f).max()), 1e-12)
        for x, b in enumerate(bins):
            h = int(38 * float(b.mean()) / peak) if b.size else 0
            strip[40 - h:, x] = (200, 90, 40)
        return _caption(np.vstack([img, strip]), f"D={f.size} |f|={np.linalg.norm(f):.1f}", size=0.4)
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


def _caption(img: np.ndarray, text: str, size: float = 0.7) -> np.ndarray:
    import cv2

    y = int(30 * size / 0.7)
    cv2.putText(img, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, size, (255, 255, 255), 1, cv2.LINE_AA)
    return img
