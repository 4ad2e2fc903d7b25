"""MMSegmentation's MultimodalEncoderDecoder (SAN) at inference: a CLIP image encoder, a CLIP text
encoder of the class names and a decode head that matches the two.

The graph takes the resized image as EncoderDecoder's does and returns `(scores [N, C, H, W],)`.
As mmseg's data preprocessor and `postprocess_result`: the normalised image is zero-padded at
the bottom/right to a multiple of `size_divisor` (when given), the head's scores are computed at
the padded size, then cropped back. With `asymmetric_input` the image encoder sees the padded
image rescaled by `encoder_resolution` (bilinear, align_corners=False, that scale factor used
as given), the head the padded image itself.

The class names' text embeddings are the text encoder's cached `class_embeddings()` (see
clip_text.py): a constant of the exported graph.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .segmentor import EncoderDecoder


def _up_to(n, divisor: int):
    return (n + divisor - 1) // divisor * divisor


class MultimodalEncoderDecoder(nn.Module):
    slide = EncoderDecoder.slide  # the same windows, over this class's encode_decode

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, decode_head: nn.Module, *,
                 mean: Sequence[float], std: Sequence[float], encoder_resolution: Optional[float] = None,
                 size_divisor: int = 1, mode: str = "whole", crop_size: Optional[Sequence[int]] = None,
                 stride: Optional[Sequence[int]] = None):
        super().__init__()
        if mode not in ("whole", "slide"):
            raise ValueError(f"test mode {mode!r} is not one of 'whole', 'slide'")
        if mode == "slide" and (crop_size is None or stride is None):
            raise ValueError("slide inference needs crop_size and stride")
        if mode == "slide" and int(size_divisor) > 1:
            raise ValueError("a size divisor with sliding-window inference is not supported")
        if encoder_resolution is not None and not 0 < encoder_resolution <= 4:
            raise ValueError(f"encoder_resolution {encoder_resolution!r} must be in (0, 4]")
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.decode_head = decode_head
        self.encoder_resolution = encoder_resolution
        self.size_divisor = int(size_divisor)
        self.mode = mode
        self.crop_size = tuple(int(v) for v in crop_size) if crop_size else None
        self.stride = tuple(int(v) for v in stride) if stride else None
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), False)

    def encode_decode(self, x):
        clip_input = x
        if self.encoder_resolution is not None:
            clip_input = F.interpolate(x, scale_factor=self.encoder_resolution, mode="bilinear", align_corners=False)
        features = self.image_encoder(clip_input)
        return self.decode_head(x, features, self.text_encoder.class_embeddings(), x.shape[-2:])

    def forward(self, images):
        x = (images - self.mean) / self.std
        if self.mode == "slide":
            return (self.slide(x),)
        h, w = images.shape[2], images.shape[3]
        if self.size_divisor > 1:
            x = F.pad(x, [0, _up_to(w, self.size_divisor) - w, 0, _up_to(h, self.size_divisor) - h])
        return (self.encode_decode(x)[:, :, :h, :w],)
