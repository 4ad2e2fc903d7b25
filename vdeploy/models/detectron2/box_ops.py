"""Box arithmetic with detectron2's exact float semantics, written to trace into ONNX.

Boxes are float tensors [..., 4] as (x1, y1, x2, y2) in input-image pixels.
Image sizes arrive as tensors (`im_info` [1, 2] = valid height, width), never as Python
ints, so an exported graph clips to the size of whatever image it is given.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

# detectron2's default: no predicted box grows more than 1000/16 times its reference box.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class Box2BoxTransform:
    """Decode (dx, dy, dw, dh) regression deltas onto reference boxes (R-CNN parametrisation).

    `weights` (wx, wy, ww, wh) divide the deltas, as detectron2's BBOX_REG_WEIGHTS;
    `scale_clamp` caps dw/dh before exp().
    """

    def __init__(self, weights: Sequence[float], scale_clamp: float = DEFAULT_SCALE_CLAMP):
        if len(weights) != 4:
            raise ValueError(f"Box2BoxTransform needs 4 weights, got {weights}")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = float(scale_clamp)

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """deltas [R, K*4], boxes [R, 4] -> decoded boxes [R, K*4] (K classes share one box)."""
        deltas = deltas.float()
        boxes = boxes.to(deltas.dtype)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights

        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.scale_clamp)

        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]

        x1 = pred_ctr_x - 0.5 * pred_w
        y1 = pred_ctr_y - 0.5 * pred_h
        x2 = pred_ctr_x + 0.5 * pred_w
        y2 = pred_ctr_y + 0.5 * pred_h
        # Interleave back to (x1, y1, x2, y2) per class: [R, K, 4] -> [R, K*4].
        return torch.stack((x1, y1, x2, y2), dim=-1).flatten(1)


def clip_boxes(boxes: torch.Tensor, image_hw: torch.Tensor) -> torch.Tensor:
    """Clamp boxes [N, 4] into [0, w] x [0, h]; `image_hw` is a float tensor (h, w).

    Same as detectron2's `Boxes.clip`, with the bounds as tensors so tracing keeps them dynamic.
    """
    h = image_hw[0].to(boxes.dtype)
    w = image_hw[1].to(boxes.dtype)
    x1 = torch.minimum(boxes[:, 0].clamp(min=0), w)
    y1 = torch.minimum(boxes[:, 1].clamp(min=0), h)
    x2 = torch.minimum(boxes[:, 2].clamp(min=0), w)
    y2 = torch.minimum(boxes[:, 3].clamp(min=0), h)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def nonempty(boxes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Bool mask [N]: boxes whose width and height both exceed `threshold` (detectron2 semantics)."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return (widths > threshold) & (heights > threshold)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
