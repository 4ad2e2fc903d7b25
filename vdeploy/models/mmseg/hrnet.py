"""MMSegmentation's HRNet (HRNetV2) backbone for inference.

A stem of two stride-2 3x3 convs, a ResNet-bottleneck stage, then three multi-branch stages
whose HRModules run one chain of residual blocks per resolution and exchange information
between all branches (fuse layers). Returns the branch outputs of the last stage, high to low
resolution. Module names follow mmseg's (`transitionN`, `stageN.M.branches`, `fuse_layers`,
`None` entries included, as they hold no weights) so that its checkpoints load unchanged; the
residual blocks are the ResNet ones (same names as mmseg's).
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from .layers import BN, Upsample, norm_layer, resize
from .resnet import BasicBlock, Bottleneck

BLOCKS = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}


def _conv_norm(cin, cout, kernel, stride, norm, relu=False, *extra):
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), norm_layer(norm, cout)]
    return nn.Sequential(*layers, *extra, *([nn.ReLU()] if relu else []))


def _res_layer(block, inplanes, planes, num_blocks, norm):
    """A chain of residual blocks; the first projects the shortcut when the width changes."""
    downsample = None
    if inplanes != planes * block.expansion:
        downsample = _conv_norm(inplanes, planes * block.expansion, 1, 1, norm)
    blocks = [block(inplanes, planes, 1, 1, downsample)]
    blocks += [block(planes * block.expansion, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


class HRModule(nn.Module):
    def __init__(self, block, num_blocks: Sequence[int], in_channels: Sequence[int], num_channels: Sequence[int],
                 multiscale_output: bool, norm: dict):
        super().__init__()
        n = len(num_blocks)
        self.branches = nn.ModuleList([_res_layer(block, in_channels[i], num_channels[i], num_blocks[i], norm)
                                       for i in range(n)])
        chans = [c * block.expansion for c in num_channels]
        self.fuse_layers = None
        if n > 1:
            fuse = []
            for i in range(n if multiscale_output else 1):
                row: list[Optional[nn.Module]] = []
                for j in range(n):
                    if j > i:  # lower resolution: 1x1 conv, then upsampled
                        up = Upsample(2 ** (j - i), "bilinear", False)
                        row.append(_conv_norm(chans[j], chans[i], 1, 1, norm, False, up))
                    elif j == i:
                        row.append(None)
                    else:  # higher resolution: stride-2 3x3 convs, ReLU between them
                        steps = [_conv_norm(chans[j], chans[j], 3, 2, norm, True) for _ in range(i - j - 1)]
                        steps.append(_conv_norm(chans[j], chans[i], 3, 2, norm))
                        row.append(nn.Sequential(*steps))
                fuse.append(nn.ModuleList(row))
            self.fuse_layers = nn.ModuleList(fuse)
        self.relu = nn.ReLU()

    def forward(self, xs):
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        outs = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[i]
            for j, layer in enumerate(row):
                if j > i:
                    # mmseg resizes the upsampled map once more to the branch's exact size (odd sizes)
                    y = y + resize(layer(xs[j]), xs[i].shape[2:], align_corners=False)
                elif j < i:
                    y = y + layer(xs[j])
            outs.append(self.relu(y))
        return outs


class HRNet(nn.Module):
    """`stages`: four dicts of mmseg's `extra` (num_modules, num_branches, block, num_blocks,
    num_channels); stage 1 has one branch."""

    def __init__(self, stages: Sequence[dict], *, in_channels: int = 3, norm: dict = BN,
                 multiscale_output: bool = True):
        super().__init__()
        if len(stages) != 4 or stages[0]["num_branches"] != 1:
            raise ValueError("HRNet needs four stages, the first with one branch")
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 2, 1, bias=False)
        self.bn1 = norm_layer(norm, 64)
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = norm_layer(norm, 64)
        self.relu = nn.ReLU()
        s1 = stages[0]
        block = BLOCKS[s1["block"]]
        self.layer1 = _res_layer(block, 64, s1["num_channels"][0], s1["num_blocks"][0], norm)
        pre = [s1["num_channels"][0] * block.expansion]
        for k, cfg in enumerate(stages[1:], start=2):
            block = BLOCKS[cfg["block"]]
            cur = [c * block.expansion for c in cfg["num_channels"]]
            setattr(self, f"transition{k - 1}", self._transition(pre, cur, norm))
            modules = [HRModule(block, cfg["num_blocks"], cur, cfg["num_channels"],
                                multiscale_output or k < 4 or m < cfg["num_modules"] - 1, norm)
                       for m in range(cfg["num_modules"])]
            setattr(self, f"stage{k}", nn.Sequential(*modules))
            pre = cur

    @staticmethod
    def _transition(pre: Sequence[int], cur: Sequence[int], norm: dict) -> nn.ModuleList:
        layers: list[Optional[nn.Module]] = []
        for i, c in enumerate(cur):
            if i < len(pre):
                layers.append(_conv_norm(pre[i], c, 3, 1, norm, True) if c != pre[i] else None)
            else:  # a new, lower branch: stride-2 convs from the last one
                steps = [_conv_norm(pre[-1], c if j == i - len(pre) else pre[-1], 3, 2, norm, True)
                         for j in range(i + 1 - len(pre))]
                layers.append(nn.Sequential(*steps))
        return nn.ModuleList(layers)

    def forward(self, x):
        x = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        ys = [self.layer1(x)]
        for k in (2, 3, 4):
            transition = getattr(self, f"transition{k - 1}")
            # existing branches pass through (or a conv); new ones grow from the lowest one
            xs = [ys[i] if t is None and i < len(ys) else t(ys[i] if i < len(ys) else ys[-1])
                  for i, t in enumerate(transition)]
            ys = getattr(self, f"stage{k}")(xs)
        return tuple(ys)
