"""Deformable convolution (DCN v1) and its modulated form (DCN v2), as detectron2's `DeformConv` /
`ModulatedDeformConv` (also used by centermask2's VoVNet), inference only.

In PyTorch the layer runs torchvision's `deform_conv2d`, the same kernel detectron2 itself calls on
CPU. When traced for export (ONNX, and OpenVINO through ONNX) it is written with standard
operators instead: bilinear sampling of every kernel tap with GridSample, laid out so that each
output pixel's kh x kw samples form a tile, then an ordinary strided Conv over the tiles. ONNX has a
DeformConv operator (opset 19) and onnxruntime runs it, but OpenVINO's ONNX reader has no
conversion for it, and a bundle's graph must run on both; docs/deformable-convolution.md has the
measurements behind the choice.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


def deform_conv2d_sampled(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                          bias: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None, *,
                          stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups: int = 1) -> torch.Tensor:
    """torchvision's `deform_conv2d` from GridSample + Conv (same arguments, same result).

    offset: [N, 2 * G * kh * kw, Ho, Wo], (dy, dx) per offset group G and kernel tap;
    mask: [N, G * kh * kw, Ho, Wo] or None. A sample outside the input reads zeros, and a sample
    straddling the border mixes the inside pixels with zeros, as in torchvision and detectron2.
    """
    n, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    ho, wo = offset.shape[-2:]
    dg = offset.shape[1] // (2 * kh * kw)
    # Undeformed sampling positions in input pixels: [Ho, kh] rows and [Wo, kw] columns.
    ys = (torch.arange(ho, device=x.device, dtype=x.dtype) * stride[0] - padding[0]).unsqueeze(1) + \
        torch.arange(kh, device=x.device, dtype=x.dtype).unsqueeze(0) * dilation[0]
    xs = (torch.arange(wo, device=x.device, dtype=x.dtype) * stride[1] - padding[1]).unsqueeze(1) + \
        torch.arange(kw, device=x.device, dtype=x.dtype).unsqueeze(0) * dilation[1]
    # [N, G, kh, kw, 2, Ho, Wo] -> [N, G, Ho, kh, Wo, kw] per coordinate: tap (i, j) of output
    # pixel (y, x) lands at tile position (y * kh + i, x * kw + j).
    off = offset.reshape(n, dg, kh, kw, 2, ho, wo)
    py = off[:, :, :, :, 0].permute(0, 1, 4, 2, 5, 3) + ys.reshape(1, 1, ho, kh, 1, 1)
    px = off[:, :, :, :, 1].permute(0, 1, 4, 2, 5, 3) + xs.reshape(1, 1, 1, 1, wo, kw)
    # align_corners=True maps -1 / +1 to the centres of the first / last pixels.
    grid = torch.stack((px * (2.0 / (w - 1)) - 1.0, py * (2.0 / (h - 1)) - 1.0), dim=-1)
    grid = grid.reshape(n * dg, ho * kh, wo * kw, 2)
    tiles = F.grid_sample(x.reshape(n * dg, c // dg, h, w), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=True)
    if mask is not None:
        m = mask.reshape(n, dg, kh, kw, ho, wo).permute(0, 1, 4, 2, 5, 3).reshape(n * dg, 1, ho * kh, wo * kw)
        tiles = tiles * m
    return F.conv2d(tiles.reshape(n, c, ho * kh, wo * kw), weight, bias, stride=(kh, kw), groups=groups)


class DeformConv(nn.Module):
    """detectron2's DeformConv (`modulated=False`) or ModulatedDeformConv (`modulated=True`).

    Parameters `weight` (and `bias` when asked), plus an optional `norm` and ReLU after it, named
    as detectron2's so checkpoints load. forward(x, offset, mask=None).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, *, stride=1, padding=0, dilation=1,
                 groups: int = 1, deformable_groups: int = 1, bias: bool = False, norm: Optional[nn.Module] = None,
                 activation: bool = False):
        super().__init__()
        if in_channels % groups or out_channels % groups or in_channels % deformable_groups:
            raise ValueError(f"deformable conv: {in_channels} -> {out_channels} channels do not split into "
                             f"{groups} groups and {deformable_groups} deformable groups")
        kh, kw = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.groups, self.deformable_groups = groups, deformable_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        nn.init.kaiming_uniform_(self.weight, a=1)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if _exporting():
            x = deform_conv2d_sampled(x, offset, self.weight, self.bias, mask, stride=self.stride,
                                      padding=self.padding, dilation=self.dilation, groups=self.groups)
        else:
            from torchvision.ops import deform_conv2d

            x = deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.activation else x


def split_offset_mask(offset_mask: torch.Tensor, modulated: bool):
    """The offset conv's output as detectron2 splits it: modulated DCN takes the first two thirds of
    the channels as offsets and the sigmoid of the last third as the mask."""
    if not modulated:
        return offset_mask, None
    k = offset_mask.shape[1] // 3
    return offset_mask[:, : 2 * k], offset_mask[:, 2 * k:].sigmoid()
