"""Pasting RoI mask probabilities into the image, vectorised with separable bilinear weights.

A bilinear resample of a small M x M mask onto an h x w region is `Wy @ mask @ Wx.T`, where each
row of Wy / Wx holds the two interpolation weights of one output row / column. That turns the
per-pixel grid sampling of the frameworks into two small matrix products per mask.
"""
from __future__ import annotations

import math

import numpy as np


def _grid_sample_weights(coords: np.ndarray, size: int) -> np.ndarray:
    """Weights of `grid_sample(..., align_corners=False, padding_mode="zeros")` along one axis.

    `coords` are sample positions in source pixel units (pixel centres at 0..size-1); samples that
    fall outside blend with zeros, exactly as grid_sample's zero padding does.
    """
    i0 = np.floor(coords).astype(np.int64)
    f = (coords - i0).astype(np.float32)
    W = np.zeros((coords.shape[0], size), np.float32)
    rows = np.arange(coords.shape[0])
    for idx, wt in ((i0, 1.0 - f), (i0 + 1, f)):
        ok = (idx >= 0) & (idx < size)
        W[rows[ok], idx[ok]] = wt[ok]
    return W


def paste_masks_detectron2(masks: np.ndarray, boxes: np.ndarray, img_h: int, img_w: int,
                           threshold: float = 0.5) -> np.ndarray:
    """detectron2's `paste_masks_in_image` (CPU path): masks N x M x M probabilities, boxes N x 4
    in image pixels -> N x img_h x img_w bool. Each mask is sampled only inside its box grown by
    one pixel (detectron2 skips the rest), with grid_sample semantics."""
    n = masks.shape[0]
    out = np.zeros((n, img_h, img_w), bool)
    if n == 0:
        return out
    m = masks.shape[-1]
    for i in range(n):
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        xa = max(int(math.floor(x0)) - 1, 0)
        ya = max(int(math.floor(y0)) - 1, 0)
        xb = min(int(math.ceil(x1)) + 1, img_w)
        yb = min(int(math.ceil(y1)) + 1, img_h)
        if xb <= xa or yb <= ya:
            continue
        # grid_sample maps normalised g in [-1, 1] to ((g + 1) * M - 1) / 2 source pixels.
        gx = ((np.arange(xa, xb, dtype=np.float32) + 0.5) - x0) / max(x1 - x0, 1e-12) * 2 - 1
        gy = ((np.arange(ya, yb, dtype=np.float32) + 0.5) - y0) / max(y1 - y0, 1e-12) * 2 - 1
        wx = _grid_sample_weights(((gx + 1) * m - 1) / 2, m)
        wy = _grid_sample_weights(((gy + 1) * m - 1) / 2, m)
        region = wy @ masks[i].astype(np.float32) @ wx.T
        out[i, ya:yb, xa:xb] = region >= threshold
    return out


def _interpolate_weights(out_n: int, in_n: int) -> np.ndarray:
    """Weights of `F.interpolate(mode="bilinear", align_corners=False)` along one axis."""
    scale = in_n / out_n
    src = np.maximum((np.arange(out_n, dtype=np.float32) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_n - 1)
    i1 = np.minimum(i0 + 1, in_n - 1)
    f = (src - i0).astype(np.float32)
    W = np.zeros((out_n, in_n), np.float32)
    rows = np.arange(out_n)
    np.add.at(W, (rows, i0), 1.0 - f)
    np.add.at(W, (rows, i1), f)
    return W


def paste_masks_torchvision(masks: np.ndarray, boxes: np.ndarray, img_h: int, img_w: int,
                            threshold: float = 0.5, padding: int = 1) -> np.ndarray:
    """torchvision's `paste_masks_in_image`: pad each mask by one pixel, grow its box to match,
    round the box to integers, resize the mask to the box and place it."""
    n = masks.shape[0]
    out = np.zeros((n, img_h, img_w), bool)
    if n == 0:
        return out
    m = masks.shape[-1]
    scale = (m + 2 * padding) / m
    padded = np.pad(masks.astype(np.float32), ((0, 0), (padding, padding), (padding, padding)))
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    cx = (boxes[:, 2] + boxes[:, 0]) * 0.5
    cy = (boxes[:, 3] + boxes[:, 1]) * 0.5
    grown = np.stack([cx - w_half, cy - h_half, cx + w_half, cy + h_half], 1).astype(np.float32)
    grown = np.trunc(grown).astype(np.int64)  # torchvision: .to(torch.int64)
    for i in range(n):
        bx0, by0, bx1, by1 = (int(v) for v in grown[i])
        w, h = max(bx1 - bx0 + 1, 1), max(by1 - by0 + 1, 1)
        x0, x1 = max(bx0, 0), min(bx1 + 1, img_w)
        y0, y1 = max(by0, 0), min(by1 + 1, img_h)
        if x1 <= x0 or y1 <= y0:
            continue
        wy = _interpolate_weights(h, padded.shape[1])[y0 - by0:y1 - by0]
        wx = _interpolate_weights(w, padded.shape[2])[x0 - bx0:x1 - bx0]
        out[i, y0:y1, x0:x1] = (wy @ padded[i] @ wx.T) > threshold
    return out


PASTERS = {"detectron2": paste_masks_detectron2, "torchvision": paste_masks_torchvision}
