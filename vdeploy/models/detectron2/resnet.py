"""detectron2's ResNet / ResNeXt bottom-up backbone (depth 18-152), inference only.

Module and parameter names match detectron2's (`stem.conv1`, `res2.0.conv1.norm`, ...), so
a detectron2 checkpoint's `backbone.bottom_up.*` keys load unchanged.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .registry import ShapeSpec

BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
STAGE_NAMES = ("res2", "res3", "res4", "res5")


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, stored as buffers (not parameters).

    Computed as x * scale + shift, exactly as detectron2 does, so float32 results match.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


def make_norm(norm: str, channels: int) -> Optional[nn.Module]:
    """detectron2's `get_norm`: "" (none), "FrozenBN", "BN", "SyncBN"/"naiveSyncBN"/"nnSyncBN"
    (plain BatchNorm at inference, one device), "GN" (32 groups)."""
    if norm in ("", None):
        return None
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if norm in ("BN", "SyncBN", "naiveSyncBN", "nnSyncBN", "naiveSyncBN_N"):
        return nn.BatchNorm2d(channels)
    if norm == "GN":
        return nn.GroupNorm(32, channels)
    if norm == "LN":  # channels-first LayerNorm (ViTDet / MViTv2 / Swin heads)
        from .layer_norm import LayerNorm2d

        return LayerNorm2d(channels)
    raise ValueError(f"unsupported norm {norm!r}; supported: '', FrozenBN, BN, SyncBN, naiveSyncBN, GN")


class Conv2d(nn.Conv2d):
    """Conv2d followed by an optional `norm` submodule and activation (detectron2's layout)."""

    def __init__(self, *args, norm: Optional[nn.Module] = None, activation: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.activation else x


class BasicStem(nn.Module):
    """7x7/2 convolution + norm + ReLU + 3x3/2 max-pool: stride 4."""

    stride = 4

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "FrozenBN"):
        super().__init__()
        self.out_channels = out_channels
        self.conv1 = Conv2d(in_channels, out_channels, kernel_size=7, stride=2, padding=3, bias=False,
                            norm=make_norm(norm, out_channels), activation=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)


def projection_shortcut(in_channels: int, out_channels: int, stride: int, norm: str) -> Optional[nn.Module]:
    """A block's 1x1 projection where it changes width (None: the identity shortcut)."""
    if in_channels == out_channels:
        return None
    return Conv2d(in_channels, out_channels, 1, stride=stride, bias=False, norm=make_norm(norm, out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm: str = "FrozenBN"):
        super().__init__()
        self.stride = stride
        self.shortcut = projection_shortcut(in_channels, out_channels, stride, norm)
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False,
                            norm=make_norm(norm, out_channels), activation=True)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, bias=False,
                            norm=make_norm(norm, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class BottleneckBlock(nn.Module):
    """1x1 reduce, 3x3 (grouped, dilated), 1x1 expand (ResNet-50+ and ResNeXt).

    `stride_in_1x1`: put the stride on the first 1x1 convolution (MSRA / Caffe2 weights) rather
    than on the 3x3 one (torchvision weights).
    """

    def __init__(self, in_channels: int, out_channels: int, *, bottleneck_channels: int, stride: int = 1,
                 num_groups: int = 1, norm: str = "FrozenBN", stride_in_1x1: bool = False, dilation: int = 1):
        super().__init__()
        self.stride = stride
        self.shortcut = projection_shortcut(in_channels, out_channels, stride, norm)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False,
                            norm=make_norm(norm, bottleneck_channels), activation=True)
        self.conv2 = Conv2d(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=dilation,
                            bias=False, groups=num_groups, dilation=dilation,
                            norm=make_norm(norm, bottleneck_channels), activation=True)
        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, bias=False, norm=make_norm(norm, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.conv2(self.conv1(x)))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


def make_stage(num_blocks: int, in_channels: int, out_channels: int, *, first_stride: int, depth: int,
               bottleneck_channels: int = 0, num_groups: int = 1, norm: str = "FrozenBN",
               stride_in_1x1: bool = False, dilation: int = 1, deform: Optional[dict] = None) -> nn.Sequential:
    """One ResNet stage: `num_blocks` blocks, the first one strided; blocks named "0", "1", ...

    `deform`: {"deform_modulated": bool, "deform_num_groups": int} for deformable 3x3 convs."""
    blocks = []
    for i in range(num_blocks):
        stride = first_stride if i == 0 else 1
        if deform is not None:
            from .deform_resnet import DeformBottleneckBlock

            blocks.append(DeformBottleneckBlock(in_channels, out_channels, bottleneck_channels=bottleneck_channels,
                                                stride=stride, num_groups=num_groups, norm=norm,
                                                stride_in_1x1=stride_in_1x1, dilation=dilation, **deform))
        elif depth in (18, 34):
            blocks.append(BasicBlock(in_channels, out_channels, stride=stride, norm=norm))
        else:
            blocks.append(BottleneckBlock(in_channels, out_channels, bottleneck_channels=bottleneck_channels,
                                          stride=stride, num_groups=num_groups, norm=norm,
                                          stride_in_1x1=stride_in_1x1, dilation=dilation))
        in_channels = out_channels
    return nn.Sequential(*blocks)


class ResNet(nn.Module):
    """Stem plus the stages res2..res5 that `out_features` needs (later stages are not built).

    Args:
        depth: 18, 34, 50, 101 or 152.
        out_features: names among "stem", "res2".."res5" returned by forward.
        in_channels: image channels (3).
        stem_out_channels, res2_out_channels: widths; each later stage doubles them.
        num_groups, width_per_group: ResNeXt cardinality; bottleneck width of res2 is their product.
        stride_in_1x1: see BottleneckBlock.
        res5_dilation: 2 for the dilated-C5 ("DC5") variant (res5 keeps stride 16).
        norm: see `make_norm`.

    forward(x [1, 3, H, W] normalised) -> dict name -> feature map; `output_shape()` gives each
    output's channels and stride; `size_divisibility` is 0 (no padding constraint).
    """

    size_divisibility = 0

    def __init__(self, depth: int = 50, out_features: Sequence[str] = ("res4",), *, in_channels: int = 3,
                 stem_out_channels: int = 64, res2_out_channels: int = 256, num_groups: int = 1,
                 width_per_group: int = 64, stride_in_1x1: bool = True, res5_dilation: int = 1,
                 norm: str = "FrozenBN", deform_on_per_stage: Sequence[bool] = (False,) * 4,
                 deform_modulated: bool = False, deform_num_groups: int = 1):
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"unsupported ResNet depth {depth}; supported: {sorted(BLOCKS_PER_STAGE)}")
        if res5_dilation not in (1, 2):
            raise ValueError(f"RES5_DILATION must be 1 or 2, got {res5_dilation}")
        if depth in (18, 34) and (res2_out_channels != 64 or res5_dilation != 1 or num_groups != 1):
            raise ValueError("ResNet-18/34 need RES2_OUT_CHANNELS=64, RES5_DILATION=1 and NUM_GROUPS=1")
        if depth in (18, 34) and any(deform_on_per_stage):
            raise ValueError("DEFORM_ON_PER_STAGE is not supported for ResNet-18/34 (as in detectron2)")
        if len(deform_on_per_stage) != 4:
            raise ValueError(f"DEFORM_ON_PER_STAGE needs 4 values (res2..res5), got {list(deform_on_per_stage)}")
        deform = {"deform_modulated": bool(deform_modulated), "deform_num_groups": int(deform_num_groups)}
        unknown = set(out_features) - {"stem", *STAGE_NAMES}
        if unknown or not out_features:
            raise ValueError(f"unknown ResNet out_features {sorted(unknown) or out_features}")
        self._out_features = tuple(out_features)

        self.stem = BasicStem(in_channels, stem_out_channels, norm)
        self._shapes = {"stem": ShapeSpec(stem_out_channels, BasicStem.stride)}
        num_stages = max([STAGE_NAMES.index(f) + 1 for f in out_features if f != "stem"], default=0)
        in_ch, out_ch = stem_out_channels, res2_out_channels
        bottleneck = num_groups * width_per_group
        stride = BasicStem.stride
        self.stage_names: list[str] = []
        for idx, name in enumerate(STAGE_NAMES[:num_stages]):
            dilation = res5_dilation if name == "res5" else 1
            first_stride = 1 if idx == 0 or dilation == 2 else 2
            stage = make_stage(BLOCKS_PER_STAGE[depth][idx], in_ch, out_ch, first_stride=first_stride, depth=depth,
                               bottleneck_channels=bottleneck, num_groups=num_groups, norm=norm,
                               stride_in_1x1=stride_in_1x1, dilation=dilation,
                               deform=deform if deform_on_per_stage[idx] else None)
            self.add_module(name, stage)
            self.stage_names.append(name)
            stride *= first_stride
            self._shapes[name] = ShapeSpec(out_ch, stride)
            in_ch, out_ch, bottleneck = out_ch, out_ch * 2, bottleneck * 2

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {f: self._shapes[f] for f in self._out_features}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs
