"""MMSegmentation's EncoderDecoder at inference: normalise, backbone, decode head, logits at the
size of the image it was given, by whole-image or sliding-window inference.

The graph takes the image after the test pipeline's resize (float32 [N, 3, H, W], 0-255, in the
colour order of `mean`/`std`) and returns `(logits [N, C, H, W],)`. Resizing those logits to the
original image and the argmax happen on the host, as mmseg's `postprocess_result` does.

Sliding windows follow mmseg's `slide_inference`: windows of `crop` (h, w) every `stride`, the
last one of a row/column flush with the border, a window no larger than the image, and
overlapping logits averaged by how many windows cover each pixel. The windows are computed from
the input's shape with tensor operations (index_select / scatter_add), so one exported graph
serves every image size.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class EncoderDecoder(nn.Module):
    def __init__(self, backbone: nn.Module, decode_head: nn.Module, *, mean: Sequence[float], std: Sequence[float],
                 align_corners: bool = False, mode: str = "whole", crop_size: Optional[Sequence[int]] = None,
                 stride: Optional[Sequence[int]] = None, neck: Optional[nn.Module] = None):
        super().__init__()
        if mode not in ("whole", "slide"):
            raise ValueError(f"test mode {mode!r} is not one of 'whole', 'slide'")
        if mode == "slide" and (crop_size is None or stride is None):
            raise ValueError("slide inference needs crop_size and stride")
        self.backbone = backbone
        if neck is not None:  # only registered when present: mmseg has no `neck.` keys otherwise
            self.neck = neck
        # CascadeEncoderDecoder (OCRNet): a list of heads, each after the first refining the
        # previous one's logits (`decode_head.0`, `decode_head.1`, ... as in mmseg)
        self.decode_head = nn.ModuleList(decode_head) if isinstance(decode_head, (list, tuple)) else decode_head
        self.align_corners = align_corners
        self.mode = mode
        self.crop_size = tuple(int(v) for v in crop_size) if crop_size else None
        self.stride = tuple(int(v) for v in stride) if stride else None
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), False)

    def encode_decode(self, x):
        """Normalised images -> logits at their own size (mmseg's `encode_decode` + `predict_by_feat`)."""
        feats = self.backbone(x)
        if hasattr(self, "neck"):
            feats = self.neck(feats)
        if isinstance(self.decode_head, nn.ModuleList):
            logits = self.decode_head[0](feats)
            for head in self.decode_head[1:]:
                logits = head(feats, logits)
        elif getattr(self.decode_head, "takes_input_size", False):
            # query heads (MaskFormer, Mask2Former) resize their masks before a sigmoid: they
            # compute their scores at the input's size themselves
            return self.decode_head(feats, x.shape[-2:])
        else:
            logits = self.decode_head(feats)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)

    def forward(self, images):
        x = (images - self.mean) / self.std
        if self.mode == "whole":
            return (self.encode_decode(x),)
        return (self.slide(x),)

    def slide(self, x):
        n, c, _, _ = x.shape
        size = torch._shape_as_tensor(x)  # a tensor, so that the ONNX trace keeps H and W symbolic
        h, w = size[2], size[3]
        rows = window_indices(h, self.crop_size[0], self.stride[0])  # [gh, ch]
        cols = window_indices(w, self.crop_size[1], self.stride[1])  # [gw, cw]
        gh, ch = rows.shape
        gw, cw = cols.shape
        # flat pixel index of every window pixel: [gh*gw, ch, cw]
        flat = (rows[:, None, :, None] * w + cols[None, :, None, :]).reshape(-1, ch, cw)
        crops = x.reshape(n, c, -1).index_select(2, flat.reshape(-1))
        crops = crops.reshape(n, c, -1, ch, cw).transpose(1, 2).reshape(-1, c, ch, cw)
        logits = self.encode_decode(crops)  # [n * windows, K, ch, cw]
        k = logits.shape[1]
        logits = logits.reshape(n, -1, k, ch * cw).transpose(1, 2).reshape(n, k, -1)
        index = flat.reshape(1, 1, -1).expand(n, k, -1)
        total = torch.zeros_like(x[:, :1]).reshape(n, 1, -1).expand(n, k, -1).contiguous()
        total = total.scatter_add(2, index, logits)
        ones = torch.ones_like(flat.reshape(1, 1, -1), dtype=x.dtype)
        count = torch.zeros_like(x[:1, :1]).reshape(1, 1, -1).scatter_add(2, flat.reshape(1, 1, -1), ones)
        return (total / count).reshape(n, k, h, w)


def window_indices(length, crop: int, stride: int):
    """Pixel indices [windows, min(crop, length)] of mmseg's sliding windows along one axis.

    mmseg: grids = max(length - crop + stride - 1, 0) // stride + 1; window i ends at
    min(i * stride + crop, length) and starts `crop` before that (not below 0).
    """
    grids = torch.div(torch.clamp(length - crop + stride - 1, min=0), stride, rounding_mode="floor") + 1
    i = torch.arange(grids, device=length.device)
    end = torch.clamp(i * stride + crop, max=length)
    start = torch.clamp(end - crop, min=0)
    extent = torch.clamp(length, max=crop)
    return start[:, None] + torch.arange(extent, device=length.device)[None, :]
