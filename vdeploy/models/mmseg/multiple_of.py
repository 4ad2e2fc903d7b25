"""EncoderDecoder for configs that bring the image to a multiple of a size first.

- "pad" (SegNeXt: the data preprocessor's `test_cfg.size_divisor`): the normalised image is
  zero-padded at the bottom/right to a multiple of `divisor`; the logits, resized to the
  padded size, are cropped back to the image (mmseg's `padding_size` crop).
- "resize" (PoolFormer: the test pipeline's `ResizeToMultiple`): the uint8 image is resized to
  the next multiples of `divisor` by `cv2_linear_u8`, OpenCV's 8-bit INTER_LINEAR in its own
  fixed-point arithmetic (a float resize rounds differently on ~1% of pixels, which moves small
  regions of the label map); the logits stay at that size, and the host's resize to the
  original image is then mmseg's own single resize.
Amounts are computed from the traced shape, so one exported graph serves every size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .segmentor import EncoderDecoder


def _up_to(n, divisor: int):
    return (n + divisor - 1) // divisor * divisor


class MultipleOfEncoderDecoder(EncoderDecoder):
    def __init__(self, *args, multiple_of: tuple, **kwargs):
        super().__init__(*args, **kwargs)
        how, divisor = multiple_of
        if how not in ("pad", "resize") or int(divisor) < 1:
            raise ValueError(f"size multiple {multiple_of!r} is not ('pad' or 'resize', a positive int)")
        if self.mode != "whole":
            raise ValueError("a size divisor with sliding-window inference is not supported")
        self.how, self.divisor = how, int(divisor)

    def forward(self, images):
        h, w = images.shape[2], images.shape[3]
        if self.how == "resize":
            images = cv2_linear_u8(images, _up_to(h, self.divisor), _up_to(w, self.divisor))
            return (self.encode_decode((images - self.mean) / self.std),)
        x = (images - self.mean) / self.std
        x = F.pad(x, [0, _up_to(w, self.divisor) - w, 0, _up_to(h, self.divisor) - h])
        return (self.encode_decode(x)[:, :, :h, :w],)


def _fdiv(a, b):
    return torch.div(a, b, rounding_mode="floor")


def _linear_taps(n_in, n_out, clamp_weights: bool, device):
    """Per output position: source indices i0, i1 and weights w0, w1 in 1/2048 units, from the
    half-pixel source coordinate ((2d + 1) * n_in - n_out) / (2 * n_out) in exact integers.
    OpenCV clamps the coordinate at the borders along x (weights 1, 0) but only the row
    indices along y (the weights stay split)."""
    d = torch.arange(n_out, device=device)
    num, den = (2 * d + 1) * n_in - n_out, 2 * n_out
    i0 = _fdiv(num, den)
    rem = num - i0 * den
    w1 = _fdiv(rem * 4096 + den, 2 * den)
    w0 = _fdiv((den - rem) * 4096 + den, 2 * den)
    last = n_in - 1
    if clamp_weights:
        edge = (i0 < 0) | (i0 >= last)
        w0, w1 = torch.where(edge, torch.full_like(w0, 2048), w0), torch.where(edge, torch.zeros_like(w1), w1)
    return torch.clamp(i0, 0, last), torch.clamp(i0 + 1, 0, last), w0, w1


def cv2_linear_u8(images, out_h, out_w):
    """cv2.resize(img, (out_w, out_h), interpolation=INTER_LINEAR) of 8-bit images given as
    float NCHW: rows are resized first (2048-scaled integer weights), then columns combine two
    rows as OpenCV's SIMD kernel does: ((b0 * (S0 >> 4)) >> 16) + ((b1 * (S1 >> 4)) >> 16),
    rounded by (+ 2) >> 2. Integer tensors throughout, so the graph is exact on every backend."""
    h, w = images.shape[2], images.shape[3]
    img = images.round().long()
    x0, x1, a0, a1 = _linear_taps(w, out_w, True, images.device)
    rows = img.index_select(3, x0) * a0 + img.index_select(3, x1) * a1
    y0, y1, b0, b1 = _linear_taps(h, out_h, False, images.device)
    s = _fdiv(rows, 16)
    top = _fdiv(s.index_select(2, y0) * b0[:, None], 65536)
    bottom = _fdiv(s.index_select(2, y1) * b1[:, None], 65536)
    return torch.clamp(_fdiv(top + bottom + 2, 4), 0, 255).to(images.dtype)
