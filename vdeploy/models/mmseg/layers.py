"""Building blocks shared by the MMSegmentation backbones and heads (inference only).

Module and parameter names follow mmcv/mmseg (`conv`, `bn`, `activate`, `projection`, ...) so
that an mmseg checkpoint loads with no missing or unexpected keys. Dropout and DropPath are
identities at inference and are left out where they hold no weights.

`norm` and `act` arguments are small dicts in mmcv's spelling ({"type": "BN", "eps": 1e-5},
{"type": "ReLU"}) already checked by the config edge (vdeploy.frameworks.mmseg); `None` means
no layer.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

BN = {"type": "BN"}
RELU = {"type": "ReLU"}
LN = {"type": "LN"}
GELU = {"type": "GELU"}

# mmcv's `build_norm_layer` names the layer after the norm's abbreviation.
_NORM_NAMES = {"BN": "bn", "SyncBN": "bn", "BN2d": "bn", "GN": "gn", "LN": "ln", "IN": "in"}


def norm_name(norm: dict) -> str:
    return _NORM_NAMES[norm["type"]]


def norm_layer(norm: dict, channels: int) -> nn.Module:
    kind = norm["type"]
    if kind in ("BN", "SyncBN", "BN2d"):
        return nn.BatchNorm2d(channels, eps=norm.get("eps", 1e-5), momentum=norm.get("momentum", 0.1))
    if kind == "GN":
        return nn.GroupNorm(norm["num_groups"], channels, eps=norm.get("eps", 1e-5))
    if kind == "LN":
        return nn.LayerNorm(channels, eps=norm.get("eps", 1e-5))
    if kind == "IN":
        return nn.InstanceNorm2d(channels, eps=norm.get("eps", 1e-5), affine=norm.get("affine", False))
    raise ValueError(f"unsupported norm {kind!r}")


class HSigmoid(nn.Module):
    """mmcv's HSigmoid: min(max((x + bias) / divisor, min_value), max_value)."""

    def __init__(self, bias=3.0, divisor=6.0, min_value=0.0, max_value=1.0):
        super().__init__()
        self.bias, self.divisor, self.min_value, self.max_value = bias, divisor, min_value, max_value

    def forward(self, x):
        return torch.clamp((x + self.bias) / self.divisor, self.min_value, self.max_value)


def activation(act: Optional[dict], channels: int = 0) -> nn.Module:
    if act is None:
        return nn.Identity()
    kind = act["type"]
    if kind == "ReLU":
        return nn.ReLU()
    if kind == "ReLU6":
        return nn.ReLU6()
    if kind == "GELU":
        return nn.GELU()
    if kind == "HSwish":
        return nn.Hardswish()
    if kind == "HSigmoid":
        return HSigmoid(act.get("bias", 3.0), act.get("divisor", 6.0), act.get("min_value", 0.0),
                        act.get("max_value", 1.0))
    if kind == "Sigmoid":
        return nn.Sigmoid()
    if kind == "LeakyReLU":
        return nn.LeakyReLU(act.get("negative_slope", 0.01))
    if kind == "PReLU":
        return nn.PReLU(act.get("num_parameters", channels) if act.get("num_parameters", 1) != 1 else 1)
    if kind == "Swish":
        return nn.SiLU()
    if kind == "QuickGELU":
        return QuickGELU()
    raise ValueError(f"unsupported activation {kind!r}")


ACTIVATIONS = ("ReLU", "ReLU6", "GELU", "HSwish", "HSigmoid", "Sigmoid", "LeakyReLU", "PReLU", "Swish", "QuickGELU")


class QuickGELU(nn.Module):
    """CLIP's GELU approximation x * sigmoid(1.702 x) (mmseg registers it for its CLIP models)."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)
NORMS = tuple(_NORM_NAMES)


class ConvModule(nn.Module):
    """mmcv's ConvModule in its default order: conv -> norm -> activation. The conv has a bias
    only without a norm (mmcv's bias='auto') unless `bias` says otherwise."""

    def __init__(self, cin, cout, kernel_size, stride=1, padding=0, dilation=1, groups=1, *,
                 norm: Optional[dict] = BN, act: Optional[dict] = RELU, bias="auto"):
        super().__init__()
        with_bias = norm is None if bias == "auto" else bool(bias)
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation, groups, bias=with_bias)
        self.norm_attr = None
        if norm is not None:
            self.norm_attr = norm_name(norm)
            self.add_module(self.norm_attr, norm_layer(norm, cout))
        self.activate = activation(act, cout) if act is not None else None

    def forward(self, x):
        x = self.conv(x)
        if self.norm_attr is not None:
            x = getattr(self, self.norm_attr)(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


class DepthwiseSeparableConvModule(nn.Module):
    """mmcv's: depthwise ConvModule then pointwise ConvModule (same norm and activation)."""

    def __init__(self, cin, cout, kernel_size, stride=1, padding=0, dilation=1, *, norm: Optional[dict] = BN,
                 act: Optional[dict] = RELU, dw_act: Optional[dict] = "same", pw_act: Optional[dict] = "same",
                 dw_norm: Optional[dict] = "same", pw_norm: Optional[dict] = "same"):
        super().__init__()
        # "same": mmcv's dw_*/pw_* 'default', i.e. the module-wide norm/act
        self.depthwise_conv = ConvModule(cin, cin, kernel_size, stride, padding, dilation, groups=cin,
                                         norm=norm if dw_norm == "same" else dw_norm,
                                         act=act if dw_act == "same" else dw_act)
        self.pointwise_conv = ConvModule(cin, cout, 1, norm=norm if pw_norm == "same" else pw_norm,
                                         act=act if pw_act == "same" else pw_act)

    def forward(self, x):
        return self.pointwise_conv(self.depthwise_conv(x))


def resize(x, size, align_corners: bool = False, mode: str = "bilinear"):
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners)


class Upsample(nn.Module):
    """mmseg's Upsample(scale_factor, mode): output size int(size * factor). Integer factors
    multiply the traced size, so that exported graphs stay size-generic."""

    def __init__(self, scale_factor=2, mode="nearest", align_corners=None):
        super().__init__()
        self.scale_factor, self.mode, self.align_corners = scale_factor, mode, bool(align_corners)

    def forward(self, x):
        f = self.scale_factor
        if float(f).is_integer():
            size = (x.shape[2] * int(f), x.shape[3] * int(f))
        else:
            size = (int(x.shape[2] * f), int(x.shape[3] * f))
        return resize(x, size, self.align_corners, self.mode)


def resize_to(x, like, align_corners: bool):
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=align_corners)


def nlc_to_nchw(x, hw):
    h, w = hw
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


def nchw_to_nlc(x):
    return x.flatten(2).transpose(1, 2)


class PatchEmbed(nn.Module):
    """mmseg's PatchEmbed: conv projection, tokens [N, HW, C], optional LayerNorm. With
    padding='corner' the image is first padded at the bottom/right to a multiple of the stride
    (mmseg's AdaptivePadding); F.pad of a traced amount keeps ONNX graphs size-generic."""

    def __init__(self, in_channels, embed_dims, kernel_size, stride=None, padding=0, *, norm: Optional[dict] = None,
                 bias=True, corner_pad=False):
        super().__init__()
        stride = kernel_size if stride is None else stride
        self.kernel_size, self.stride, self.corner_pad = kernel_size, stride, corner_pad
        self.projection = nn.Conv2d(in_channels, embed_dims, kernel_size, stride, padding, bias=bias)
        self.norm = nn.LayerNorm(embed_dims, eps=norm.get("eps", 1e-5)) if norm is not None else None

    def forward(self, x):
        if self.corner_pad:
            x = pad_corner(x, self.kernel_size, self.stride)
        x = self.projection(x)
        hw = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        if self.norm is not None:
            x = self.norm(x)
        return x, hw


def pad_corner(x, kernel: int, stride: int):
    """mmseg's AdaptivePadding('corner'): pad so that ceil(size / stride) windows fit."""
    h, w = x.shape[-2], x.shape[-1]
    pad_h = torch.clamp((torch.div(h + stride - 1, stride, rounding_mode="floor") - 1) * stride + kernel - h, min=0) \
        if torch.is_tensor(h) else max((-(-h // stride) - 1) * stride + kernel - h, 0)
    pad_w = torch.clamp((torch.div(w + stride - 1, stride, rounding_mode="floor") - 1) * stride + kernel - w, min=0) \
        if torch.is_tensor(w) else max((-(-w // stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, [0, pad_w, 0, pad_h])


class FFN(nn.Module):
    """mmcv's FFN (two fully-connected layers): `layers.0.0` Linear, activation, `layers.1` Linear;
    adds the identity."""

    def __init__(self, embed_dims, feedforward_channels, act: dict = GELU, add_identity=True):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(embed_dims, feedforward_channels), activation(act)),
                                    nn.Linear(feedforward_channels, embed_dims))
        self.add_identity = add_identity

    def forward(self, x, identity=None):
        out = self.layers(x)
        if not self.add_identity:
            return out
        return (x if identity is None else identity) + out


class MultiheadAttention(nn.Module):
    """mmcv's MultiheadAttention around torch's nn.MultiheadAttention (`attn.in_proj_weight`,
    `attn.out_proj`), computed here with plain matmuls so that every exporter sees the same
    simple graph. Tokens are batch-first [N, L, C]. Returns identity + attention."""

    def __init__(self, embed_dims, num_heads, bias=True):
        super().__init__()
        self.attn = _TorchMHAWeights(embed_dims, bias)
        self.num_heads = num_heads

    def forward(self, query, key=None, value=None, identity=None):
        key = query if key is None else key
        value = key if value is None else value
        out = multihead_attention(query, key, value, self.attn.in_proj_weight, self.attn.in_proj_bias,
                                  self.attn.out_proj, self.num_heads)
        return (query if identity is None else identity) + out


class _TorchMHAWeights(nn.Module):
    """The parameters of torch's nn.MultiheadAttention, under its names."""

    def __init__(self, embed_dims, bias=True):
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dims, embed_dims))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dims)) if bias else None
        self.out_proj = nn.Linear(embed_dims, embed_dims, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)


def multihead_attention(q, k, v, in_w, in_b, out_proj, num_heads):
    n, lq, c = q.shape
    wq, wk, wv = in_w.chunk(3)
    bq, bk, bv = in_b.chunk(3) if in_b is not None else (None, None, None)
    d = c // num_heads
    q = F.linear(q, wq, bq).reshape(n, -1, num_heads, d).transpose(1, 2)
    k = F.linear(k, wk, bk).reshape(n, -1, num_heads, d).transpose(1, 2)
    v = F.linear(v, wv, bv).reshape(n, -1, num_heads, d).transpose(1, 2)
    attn = torch.softmax(torch.matmul(q * d ** -0.5, k.transpose(-2, -1)), dim=-1)
    out = torch.matmul(attn, v).transpose(1, 2).reshape(n, -1, c)
    return out_proj(out)


def adaptive_avg_pool(x, bins: int):
    """`F.adaptive_avg_pool2d(x, bins)` as two matrix products, so that ONNX export works for
    any input size (the ONNX exporter only handles sizes divisible by `bins`)."""
    if bins == 1:
        return x.mean(dim=(2, 3), keepdim=True)
    return torch.matmul(torch.matmul(_pool_matrix(x, 2, bins), x), _pool_matrix(x, 3, bins).transpose(0, 1))


def _pool_matrix(x, dim: int, bins: int):
    """[bins, n] averaging matrix of adaptive pooling along `dim` (PyTorch's bin edges)."""
    n = torch._shape_as_tensor(x)[dim]
    i = torch.arange(bins, device=x.device)
    start = torch.div(i * n, bins, rounding_mode="floor")
    end = torch.div((i + 1) * n + bins - 1, bins, rounding_mode="floor")
    pos = torch.arange(n, device=x.device)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return inside.to(x.dtype) / (end - start)[:, None].to(x.dtype)


class AdaptiveAvgPool(nn.Module):
    """nn.AdaptiveAvgPool2d(bins) through `adaptive_avg_pool` (size-generic in ONNX)."""

    def __init__(self, bins: int):
        super().__init__()
        self.bins = bins

    def forward(self, x):
        return adaptive_avg_pool(x, self.bins)


class Scale(nn.Module):
    """mmcv's Scale: a learnable scalar `scale`."""

    def __init__(self, value=1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x):
        return x * self.scale
