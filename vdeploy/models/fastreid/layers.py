"""Building blocks of fast-reid's ResNet: norms, IBN-a, squeeze-excitation, non-local, pooling.

Parameter names follow fast-reid's so that its checkpoints load without renaming.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("BN", "syncBN", "GhostBN", "FrozenBN", "GN")


def make_norm(kind: str, channels: int) -> nn.Module:
    """fast-reid's `get_norm`: every batch-norm flavour is a plain BatchNorm2d at inference."""
    if kind == "GN":
        return nn.GroupNorm(32, channels)
    if kind not in NORMS:
        raise ValueError(f"unsupported norm {kind!r}; expected one of {NORMS}")
    return nn.BatchNorm2d(channels, eps=1e-5)


class IBN(nn.Module):
    """IBN-a: instance norm on the first half of the channels, batch norm on the rest."""

    def __init__(self, planes: int, norm: str):
        super().__init__()
        self.half = planes // 2
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = make_norm(norm, planes - self.half)

    def forward(self, x):
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(a), self.BN(b)], dim=1)


class SELayer(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = int(channels / reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def forward(self, x):
        y = self.fc(x.mean(dim=(2, 3)))
        return x * y[:, :, None, None]


class NonLocal(nn.Module):
    """fast-reid's `Non_local` block (dot-product attention, divided by the number of positions).

    fast-reid computes `inter_channels = reduc_ratio // reduc_ratio`, i.e. always 1; checkpoints
    are shaped that way, so it is reproduced rather than "fixed".
    """

    def __init__(self, channels: int, norm: str, inter_channels: int = 1):
        super().__init__()
        self.inter = inter_channels
        self.g = nn.Conv2d(channels, inter_channels, 1)
        self.theta = nn.Conv2d(channels, inter_channels, 1)
        self.phi = nn.Conv2d(channels, inter_channels, 1)
        self.W = nn.Sequential(nn.Conv2d(inter_channels, channels, 1), make_norm(norm, channels))

    def forward(self, x):
        n = x.shape[0]
        g = self.g(x).flatten(2).transpose(1, 2)          # N, HW, c
        theta = self.theta(x).flatten(2).transpose(1, 2)  # N, HW, c
        phi = self.phi(x).flatten(2)                      # N, c, HW
        f = torch.matmul(theta, phi)
        y = torch.matmul(f / f.shape[-1], g)
        y = y.transpose(1, 2).reshape(n, self.inter, x.shape[2], x.shape[3])
        return self.W(y) + x


# --- pooling layers (MODEL.HEADS.POOL_LAYER); each maps N,C,H,W -> N,C,1,1 -----------------

class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True)


class GlobalMaxPool(nn.Module):
    def forward(self, x):
        return x.amax(dim=(2, 3), keepdim=True)


class AdaptiveAvgMaxPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True) + x.amax(dim=(2, 3), keepdim=True)


class ClipGlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True).clamp(0.0, 1.0)


class GeneralizedMeanPooling(nn.Module):
    """GeM: (mean(clamp(x, eps)^p))^(1/p); the P variant learns `p` (a checkpoint parameter)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = False):
        super().__init__()
        self.eps = eps
        if learnable:
            self.p = nn.Parameter(torch.ones(1) * p)
        else:
            self.register_buffer("p", torch.tensor([float(p)]), persistent=False)

    def forward(self, x):
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3), keepdim=True).pow(1.0 / self.p)


class Flatten(nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0], -1, 1, 1)


def make_pool(name: str) -> nn.Module:
    factories = {
        "GlobalAvgPool": GlobalAvgPool,
        "FastGlobalAvgPool": GlobalAvgPool,
        "GlobalMaxPool": GlobalMaxPool,
        "AdaptiveAvgMaxPool": AdaptiveAvgMaxPool,
        "ClipGlobalAvgPool": ClipGlobalAvgPool,
        "GeneralizedMeanPooling": lambda: GeneralizedMeanPooling(learnable=False),
        "GeneralizedMeanPoolingP": lambda: GeneralizedMeanPooling(learnable=True),
        "Identity": nn.Identity,
        "Flatten": Flatten,
    }
    if name not in factories:
        raise ValueError(f"unsupported pool layer {name!r}; expected one of {sorted(factories)}")
    return factories[name]()
