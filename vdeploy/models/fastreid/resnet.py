"""ResNet as fast-reid builds it (`build_resnet_backbone`).

Differences from torchvision's that matter for parity: the stem max-pool has no padding and
uses `ceil_mode=True`; IBN-a replaces `bn1` in every block of stages 1-3 (never stage 4);
non-local blocks follow the last blocks of a stage.
"""
from __future__ import annotations

from torch import nn

from .layers import IBN, NonLocal, SELayer, make_norm

BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
                    152: (3, 8, 36, 3)}
# How many non-local blocks fast-reid inserts per stage when WITH_NL is on.
NONLOCAL_PER_STAGE = {18: (0, 0, 0, 0), 34: (0, 0, 0, 0), 50: (0, 2, 3, 0), 101: (0, 2, 9, 0),
                      152: (0, 2, 9, 0)}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, norm, with_ibn=False, with_se=False, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = IBN(planes, norm) if with_ibn else make_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = make_norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.se = SELayer(planes) if with_se else nn.Identity()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, norm, with_ibn=False, with_se=False, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = IBN(planes, norm) if with_ibn else make_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = make_norm(norm, planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = make_norm(norm, planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.se = SELayer(planes * 4) if with_se else nn.Identity()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Output: the last stage's feature map (stride 32, or 16 with `last_stride=1`)."""

    def __init__(self, depth: int = 50, last_stride: int = 1, norm: str = "BN", with_ibn: bool = False,
                 with_se: bool = False, with_nl: bool = False):
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"unsupported ResNet depth {depth}; expected one of {sorted(BLOCKS_PER_STAGE)}")
        block = BasicBlock if depth < 50 else Bottleneck
        blocks = BLOCKS_PER_STAGE[depth]
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = make_norm(norm, 64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        self.inplanes = 64
        strides = (1, 2, 2, last_stride)
        for i, (planes, n, stride) in enumerate(zip((64, 128, 256, 512), blocks, strides)):
            stage = self._make_stage(block, planes, n, stride, norm, with_ibn and i < 3, with_se)
            setattr(self, f"layer{i + 1}", stage)
        # Non-local blocks after the last `k` blocks of a stage, as fast-reid's `_build_nonlocal`.
        self.nl_after: list[list[int]] = []
        nl_counts = NONLOCAL_PER_STAGE[depth] if with_nl else (0, 0, 0, 0)
        for i, (k, n, planes) in enumerate(zip(nl_counts, blocks, (64, 128, 256, 512))):
            if with_nl:
                setattr(self, f"NL_{i + 1}", nn.ModuleList(
                    [NonLocal(planes * block.expansion, norm) for _ in range(k)]))
            self.nl_after.append(sorted(n - (j + 1) for j in range(k)))

    def _make_stage(self, block, planes, n, stride, norm, with_ibn, with_se):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                make_norm(norm, planes * block.expansion))
        layers = [block(self.inplanes, planes, norm, with_ibn, with_se, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, norm, with_ibn, with_se) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for s in range(4):
            after = self.nl_after[s]
            nls = getattr(self, f"NL_{s + 1}", None)
            for i, blk in enumerate(getattr(self, f"layer{s + 1}")):
                x = blk(x)
                if i in after:
                    x = nls[after.index(i)](x)
        return x
