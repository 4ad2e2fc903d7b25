"""Keypoint heatmaps -> (x, y, score), as detectron2's `heatmaps_to_keypoints` decodes them.

Each box's heatmaps are resized (bicubic, PyTorch's `F.interpolate(mode="bicubic",
align_corners=False)`) to the box's size rounded up to whole pixels; the keypoint sits at the
argmax, at the centre of its pixel scaled back by (size / rounded-up size), and its score is the
softmax at the argmax of the resized map normalised by the sum over the heatmap's own resolution
(detectron2: so that scores of objects of different sizes compare). The resize is separable:
`Wy @ map @ Wx.T` with the cubic-convolution weights of each output row / column.
"""
from __future__ import annotations

import numpy as np

CUBIC_A = -0.75  # PyTorch's (and OpenCV's) cubic convolution coefficient


def _cubic_weights(out_n: int, in_n: int) -> np.ndarray:
    """[out_n, in_n] weights of PyTorch's bicubic upsampling along one axis (align_corners=False):
    source x = (dst + 0.5) * in/out - 0.5, four taps floor(x)-1 .. floor(x)+2 clamped to the edge."""
    src = (np.arange(out_n, dtype=np.float64) + 0.5) * (in_n / out_n) - 0.5
    i0 = np.floor(src).astype(np.int64)
    t = (src - i0).astype(np.float32)
    a = np.float32(CUBIC_A)

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    coeffs = (far(t + 1), near(t), near(1 - t), far(2 - t))
    W = np.zeros((out_n, in_n), np.float32)
    rows = np.arange(out_n)
    for k, c in enumerate(coeffs):
        np.add.at(W, (rows, np.clip(i0 - 1 + k, 0, in_n - 1)), c)
    return W


def heatmaps_to_keypoints(maps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """maps [N, K, S, S] heatmap logits, boxes [N, 4] (x1, y1, x2, y2, the pixels the heads ran in)
    -> [N, K, 3] (x, y, score) in the same pixels."""
    n, k = maps.shape[:2]
    out = np.zeros((n, k, 3), np.float32)
    maps = maps.astype(np.float32, copy=False)
    boxes = boxes.astype(np.float32, copy=False)
    for i in range(n):
        x1, y1, x2, y2 = boxes[i]
        w, h = max(x2 - x1, np.float32(1.0)), max(y2 - y1, np.float32(1.0))  # float32, as detectron2
        wc, hc = int(np.ceil(w)), int(np.ceil(h))
        m = maps[i]
        if (hc, wc) == m.shape[1:]:
            roi = m.copy()
        else:
            wy, wx = _cubic_weights(hc, m.shape[1]), _cubic_weights(wc, m.shape[2])
            roi = np.matmul(np.matmul(wy[None], m), wx.T[None])  # [K, hc, wc]
        flat = roi.reshape(k, -1)
        pos = flat.argmax(axis=1)
        top = flat[np.arange(k), pos]
        # softmax at the argmax over the resized map, normalised over the heatmap's own pixels
        norm = np.exp(m - top[:, None, None]).reshape(k, -1).sum(axis=1)
        xi, yi = pos % wc, pos // wc
        out[i, :, 0] = (xi.astype(np.float32) + 0.5) * (w / np.float32(wc)) + x1
        out[i, :, 1] = (yi.astype(np.float32) + 0.5) * (h / np.float32(hc)) + y1
        out[i, :, 2] = 1.0 / norm
    return out
