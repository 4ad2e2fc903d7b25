"""SegNeXt's decode head (mmseg's LightHamHead) for inference: the selected features resized to
the first one's size and concatenated, a 1x1 squeeze conv, the Hamburger (1x1 conv, ReLU,
non-negative matrix factorisation, 1x1 conv + norm, residual, ReLU), a 1x1 align conv, then
`conv_seg`.

NMF (mmseg's NMF2D) factorises the [D, N] feature matrix into bases [D, R] and coefficients
[N, R]: coefficients start as softmax(x^T bases) and both are refined by `steps` multiplicative
updates (7 at inference), then the coefficients once more; the output is bases @ coef^T.
mmseg starts from uniform random bases drawn with torch.rand on every forward (`rand_init`),
so its output is not a function of the image alone. Here the starting bases are fixed: the
first torch.rand draw of a generator seeded with `seed`, L2-normalised over D, i.e. exactly what
mmseg draws for one image right after `torch.manual_seed(seed)`. They are a non-persistent
buffer (mmseg's checkpoints hold none), so the graph is a fixed sequence of matmuls that
exports to stock ONNX.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .heads import DecodeHead
from .layers import RELU, ConvModule, resize_to

_HAM_KEYS = {"MD_S", "MD_R", "train_steps", "eval_steps", "inv_t", "rand_init"}


class NMF2D(nn.Module):
    def __init__(self, channels: int, md_s: int = 1, md_r: int = 64, steps: int = 7, seed: int = 0):
        super().__init__()
        if channels % md_s:
            raise ValueError(f"LightHamHead: ham_channels {channels} is not divisible by MD_S {md_s}")
        self.s, self.steps = md_s, steps
        g = torch.Generator().manual_seed(seed)
        bases = F.normalize(torch.rand((md_s, channels // md_s, md_r), generator=g), dim=1)
        self.register_buffer("init_bases", bases, persistent=False)

    @staticmethod
    def update_coef(x, bases, coef):
        numerator = torch.bmm(x.transpose(1, 2), bases)
        denominator = coef.bmm(bases.transpose(1, 2).bmm(bases))
        return coef * numerator / (denominator + 1e-6)

    def forward(self, x):
        b, c, h, w = x.shape
        x = x.reshape(b * self.s, c // self.s, -1)
        bases = self.init_bases.repeat(b, 1, 1)
        # mmseg's NMF2D fixes inv_t to 1 whatever ham_kwargs say
        coef = torch.softmax(torch.bmm(x.transpose(1, 2), bases), dim=-1)
        for _ in range(self.steps):
            coef = self.update_coef(x, bases, coef)
            numerator = torch.bmm(x, coef)
            denominator = bases.bmm(coef.transpose(1, 2).bmm(coef))
            bases = bases * numerator / (denominator + 1e-6)
        coef = self.update_coef(x, bases, coef)
        return torch.bmm(bases, coef.transpose(1, 2)).reshape(b, c, h, w)


class Hamburger(nn.Module):
    def __init__(self, channels: int, ham_kwargs: dict, norm, seed: int = 0):
        super().__init__()
        self.ham_in = ConvModule(channels, channels, 1, norm=None, act=None)
        self.ham = NMF2D(channels, int(ham_kwargs.get("MD_S", 1)), int(ham_kwargs.get("MD_R", 64)),
                         int(ham_kwargs.get("eval_steps", 7)), seed)
        self.ham_out = ConvModule(channels, channels, 1, norm=norm, act=None)

    def forward(self, x):
        enjoy = self.ham_out(self.ham(F.relu(self.ham_in(x))))
        return F.relu(x + enjoy)


class LightHamHead(DecodeHead):
    def __init__(self, in_channels, channels, num_classes, *, in_index=(0, 1, 2, 3), ham_channels=512,
                 ham_kwargs=None, align_corners=False, norm=None, act=RELU, seed: int = 0):
        super().__init__(channels, num_classes, in_index, align_corners, input_transform="multiple_select",
                         norm=norm, act=act)
        ham_kwargs = dict(ham_kwargs or {})
        unknown = set(ham_kwargs) - _HAM_KEYS
        if unknown:
            raise ValueError(f"LightHamHead: ham_kwargs {sorted(unknown)} are not supported")
        if not ham_kwargs.get("rand_init", True):
            raise ValueError("LightHamHead: ham_kwargs rand_init=False (learned bases) is not supported")
        self.squeeze = self.conv(sum(in_channels), ham_channels, 1)
        self.hamburger = Hamburger(ham_channels, ham_kwargs, norm, seed)
        self.align = self.conv(ham_channels, channels, 1)

    def features(self, inputs):
        picked = self.select(inputs)
        x = torch.cat([picked[0]] + [resize_to(f, picked[0], self.align_corners) for f in picked[1:]], dim=1)
        return self.align(self.hamburger(self.squeeze(x)))
