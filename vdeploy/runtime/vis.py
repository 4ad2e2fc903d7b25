"""Drawings of predictions. What a task draws lives in its module (vdeploy.runtime.tasks); this
module holds the shared pieces (colours, captions) and the one entry point."""
from __future__ import annotations

import numpy as np

from .prediction import Prediction


def palette(n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(40, 255, size=(max(n, 1), 3), dtype=np.uint8)


DEFAULT_SCORE_THRESHOLD = 0.5  # detections drawn: a picture of every low-score box says nothing


def draw(image_bgr: np.ndarray, pred: Prediction, classes: list[str], score_threshold: float | None = None) -> np.ndarray:
    from .tasks import get_task

    return get_task(pred.task).draw(image_bgr, pred, classes,
                                    DEFAULT_SCORE_THRESHOLD if score_threshold is None else score_threshold)


def label(img: np.ndarray, text: str, x: int, y: int, color, taken: list, size: float = 0.45) -> None:
    """A text tag on a filled box of `color` at (x, y) (its bottom-left), moved down past the tags
    already drawn (`taken`, their rectangles) so that labels never cover each other."""
    import cv2

    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, 1)
    h, w = img.shape[:2]
    x = int(min(max(x, 0), max(w - tw - 2, 0)))
    y = int(min(max(y, th + 2), h - 2))
    for _ in range(len(taken) + 1):
        box = (x, y - th - 2, x + tw + 2, y + base)
        hit = next((t for t in taken if box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3]), None)
        if hit is None:
            break
        y = min(hit[3] + th + 2, h - 2)
    taken.append((x, y - th - 2, x + tw + 2, y + base))
    dark = sum(int(c) for c in color) > 380
    cv2.rectangle(img, (x, y - th - 2), (x + tw + 2, y + base), tuple(int(c) for c in color), -1)
    cv2.putText(img, text, (x + 1, y - 1), cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0) if dark else (255, 255, 255), 1, cv2.LINE_AA)


def legend(img: np.ndarray, entries: list[tuple[str, tuple]], size: float = 0.45) -> np.ndarray:
    """A strip on the right listing `entries` (name, BGR colour) with a swatch each."""
    import cv2

    if not entries:
        return img
    row = int(22 * size / 0.45)
    width = 16 + max(cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, size, 1)[0][0] for n, _ in entries) + 24
    panel = np.full((max(img.shape[0], row * len(entries) + 8), width, 3), 255, np.uint8)
    for i, (name, color) in enumerate(entries):
        y = 6 + i * row
        cv2.rectangle(panel, (6, y), (6 + row - 6, y + row - 6), tuple(int(c) for c in color), -1)
        cv2.putText(panel, name, (6 + row, y + row - 8), cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), 1, cv2.LINE_AA)
    canvas = np.full((panel.shape[0], img.shape[1], 3), 255, np.uint8)
    canvas[:img.shape[0]] = img
    return np.hstack([canvas, panel])


def caption(img: np.ndarray, text: str, size: float = 0.7) -> np.ndarray:
    import cv2

    y = int(30 * size / 0.7)
    cv2.putText(img, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, size, (255, 255, 255), 1, cv2.LINE_AA)
    return img
