"""MMSegmentation's PSANet head for inference. mmcv's PSA mask is a compiled op; here it is written
from its documented semantics with gather, sized from the input's shape, exporting to stock ONNX."""
from __future__ import annotations

import torch
from torch import nn

from .heads import BN, RELU, DecodeHead, in_channels_of
from .layers import resize_to


# --------------------------------------------------------------------------- PSANet

def psa_mask(y, mask_h: int, mask_w: int, distribute: bool):
    """mmcv's PSAMask without the compiled op. `y`: [n, mask_h*mask_w, h, w], the mask of every
    position p over a window centred on it. Returns [n, h*w, h, w]:
    collect:    out[n, q, p] = y[n, window offset of q from p, p] (0 outside the window);
    distribute: out[n, p, q] = the same value (the transpose)."""
    n, _, h, w = y.shape
    hh, hw_ = (mask_h - 1) // 2, (mask_w - 1) // 2
    ys = torch.arange(h, device=y.device)
    xs = torch.arange(w, device=y.device)
    # offsets of q relative to p, as window indices: [q_h, q_w, p_h, p_w]
    dy = ys[:, None, None, None] - ys[None, None, :, None] + hh
    dx = xs[None, :, None, None] - xs[None, None, None, :] + hw_
    inside = (dy >= 0) & (dy < mask_h) & (dx >= 0) & (dx < mask_w)
    k = torch.where(inside, dy * mask_w + dx, torch.zeros_like(dy))  # [qh, qw, ph, pw]
    k = k.reshape(1, -1, h * w).expand(n, -1, -1)  # [n, q, p]
    flat = y.reshape(n, mask_h * mask_w, h * w)
    out = torch.gather(flat, 1, k) * inside.reshape(1, -1, h * w).to(y.dtype)  # [n, q, p]
    if distribute:
        out = out.transpose(1, 2)
    return out.reshape(n, h * w, h, w)


class PSAHead(DecodeHead):
    def __init__(self, in_channels, channels, num_classes, *, mask_size, psa_type="bi-direction", compact=False,
                 shrink_factor=2, normalization_factor=1.0, psa_softmax=True, in_index=-1, align_corners=False,
                 input_transform=None, norm=BN, act=RELU):
        super().__init__(channels, num_classes, in_index, align_corners, input_transform=input_transform, norm=norm,
                         act=act)
        if psa_type not in ("collect", "distribute", "bi-direction"):
            raise ValueError(f"PSAHead psa_type {psa_type!r} is not supported")
        in_channels = in_channels_of(in_channels, input_transform)
        self.psa_type, self.compact, self.shrink_factor = psa_type, compact, shrink_factor
        self.mask_size = tuple(mask_size)
        mh, mw = self.mask_size
        self.psa_softmax = psa_softmax
        self.normalization_factor = mh * mw if normalization_factor is None else normalization_factor
        self.reduce = self.conv(in_channels, channels, 1)
        self.attention = nn.Sequential(self.conv(channels, channels, 1), nn.Conv2d(channels, mh * mw, 1, bias=False))
        if psa_type == "bi-direction":
            self.reduce_p = self.conv(in_channels, channels, 1)
            self.attention_p = nn.Sequential(self.conv(channels, channels, 1),
                                             nn.Conv2d(channels, mh * mw, 1, bias=False))
        self.proj = self.conv(channels * (2 if psa_type == "bi-direction" else 1), in_channels, 1, padding=1)
        self.bottleneck = self.conv(in_channels * 2, channels, 3, 1)

    def shrink_plan(self, x):
        """mmseg's shrink: to (h-1)//f+1 with align_corners=True when neither side is a multiple
        of f, else to h//f with align_corners=False. Kept as tensors (the choice included), so one
        exported graph follows mmseg at every input size."""
        h, w = torch._shape_as_tensor(x)[2], torch._shape_as_tensor(x)[3]
        f = self.shrink_factor
        if f == 1:
            return h, w, torch.tensor(self.align_corners)
        odd = (h % f != 0) & (w % f != 0)
        sh = torch.where(odd, torch.div(h - 1, f, rounding_mode="floor") + 1, torch.div(h, f, rounding_mode="floor"))
        sw = torch.where(odd, torch.div(w - 1, f, rounding_mode="floor") + 1, torch.div(w, f, rounding_mode="floor"))
        return sh, sw, odd

    def mask(self, y, h, w, kind):
        n = y.shape[0]
        if not self.compact:
            return psa_mask(y, self.mask_size[0], self.mask_size[1], kind == "distribute")
        # mmseg transposes the compact mask of 'collect' alone and of 'distribute' in bi-direction
        if (self.psa_type == "collect") or (self.psa_type == "bi-direction" and kind == "distribute"):
            return y.reshape(n, h * w, h * w).transpose(1, 2).reshape(n, h * w, h, w)
        return y

    def attend(self, x, y, h, w, kind):
        n, c = x.shape[0], x.shape[1]
        y = self.mask(y, h, w, kind)
        if self.psa_softmax:
            y = y.softmax(dim=1)
        out = torch.bmm(x.reshape(n, c, -1), y.reshape(n, h * w, h * w))
        return out.reshape(n, c, h, w) * (1.0 / self.normalization_factor)

    def features(self, inputs):
        x = self.select(inputs)
        identity = x
        h, w, ac = self.shrink_plan(x)
        if self.shrink_factor == 1:
            ac = None  # no shrink: mmseg's final resize uses the head's own align_corners
        if self.psa_type == "bi-direction":
            col = bilinear(self.reduce(x), h, w, ac)
            dis = bilinear(self.reduce_p(x), h, w, ac)
            out = torch.cat([self.attend(col, self.attention(col), h, w, "collect"),
                             self.attend(dis, self.attention_p(dis), h, w, "distribute")], 1)
        else:
            red = bilinear(self.reduce(x), h, w, ac)
            out = self.attend(red, self.attention(red), h, w, self.psa_type)
        out = self.proj(out)
        out = bilinear(out, identity.shape[2], identity.shape[3], ac) if ac is not None else \
            resize_to(out, identity, self.align_corners)
        return self.bottleneck(torch.cat([identity, out], dim=1))


def _interp_matrix(n_in, n_out, align_corners, dtype):
    """[n_out, n_in] matrix of PyTorch's 1-D linear interpolation for a size-given resize;
    `align_corners` may be a bool tensor (decided at run time)."""
    i = torch.arange(n_out).to(dtype)
    n_in_f, n_out_f = n_in.to(dtype), n_out.to(dtype)
    src_ac = i * (n_in_f - 1) / torch.clamp(n_out_f - 1, min=1)
    src_hp = torch.clamp((i + 0.5) * n_in_f / n_out_f - 0.5, min=0)
    src = torch.where(align_corners, src_ac, src_hp)
    i0 = torch.clamp(torch.floor(src), max=n_in_f - 1)
    i1 = torch.clamp(i0 + 1, max=n_in_f - 1)
    lam = src - i0
    j = torch.arange(n_in).to(dtype)[None, :]
    return (j == i0[:, None]).to(dtype) * (1 - lam)[:, None] + (j == i1[:, None]).to(dtype) * lam[:, None]


def bilinear(x, h, w, align_corners):
    """Bilinear resize of [n, c, H, W] to (h, w) by two matrix products; h, w and align_corners
    may be tensors, so the size and the mode stay decisions of the graph."""
    h_in, w_in = torch._shape_as_tensor(x)[2], torch._shape_as_tensor(x)[3]
    h, w = torch.as_tensor(h), torch.as_tensor(w)
    ac = torch.as_tensor(align_corners)
    return _interp_matrix(h_in, h, ac, x.dtype) @ x @ _interp_matrix(w_in, w, ac, x.dtype).transpose(0, 1)
