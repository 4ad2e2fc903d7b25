"""VoVNet-V2 (one-shot aggregation with effective squeeze-excitation), centermask2's backbone.

Module names follow centermask2 (`stem.stem_1/conv`, `stage2.OSA2_1.layers.0.OSA2_1_0/conv`,
`OSA2_1.concat.OSA2_1_concat/norm`, `OSA2_1.ese.fc`), so its checkpoints load unchanged; the `/`
inside names is theirs.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..detectron2.deform_conv import DeformConv, split_offset_mask
from ..detectron2.registry import ShapeSpec
from ..detectron2.resnet import make_norm


@dataclass(frozen=True)
class VoVNetSpec:
    stem: tuple[int, int, int]          # output channels of the three stem convs
    stage_conv_ch: tuple[int, ...]      # channels of the 3x3 convs inside each stage's OSA modules
    stage_out_ch: tuple[int, ...]       # channels after each OSA module's 1x1 aggregation
    layer_per_block: int
    block_per_stage: tuple[int, ...]
    depthwise: bool


_FULL = dict(stage_conv_ch=(128, 160, 192, 224), stage_out_ch=(256, 512, 768, 1024))
_SLIM = dict(stage_conv_ch=(64, 80, 96, 112), stage_out_ch=(112, 256, 384, 512))
# centermask2's MODEL.VOVNET.CONV_BODY names. Every variant has eSE on every OSA module.
VOVNET_SPECS = {
    "V-19-slim-dw-eSE": VoVNetSpec((64, 64, 64), layer_per_block=3, block_per_stage=(1,) * 4, depthwise=True, **_SLIM),
    "V-19-dw-eSE": VoVNetSpec((64, 64, 64), layer_per_block=3, block_per_stage=(1,) * 4, depthwise=True, **_FULL),
    "V-19-slim-eSE": VoVNetSpec((64, 64, 128), layer_per_block=3, block_per_stage=(1,) * 4, depthwise=False, **_SLIM),
    "V-19-eSE": VoVNetSpec((64, 64, 128), layer_per_block=3, block_per_stage=(1,) * 4, depthwise=False, **_FULL),
    "V-39-eSE": VoVNetSpec((64, 64, 128), layer_per_block=5, block_per_stage=(1, 1, 2, 2), depthwise=False, **_FULL),
    "V-57-eSE": VoVNetSpec((64, 64, 128), layer_per_block=5, block_per_stage=(1, 1, 4, 3), depthwise=False, **_FULL),
    "V-99-eSE": VoVNetSpec((64, 64, 128), layer_per_block=5, block_per_stage=(1, 3, 9, 3), depthwise=False, **_FULL),
}
STAGE_NAMES = ("stage2", "stage3", "stage4", "stage5")


def _conv_unit(in_ch: int, out_ch: int, name: str, norm: str, *, kernel: int = 3, stride: int = 1) -> list:
    """conv (no bias) -> norm -> ReLU, named `<name>/conv`, `<name>/norm`, `<name>/relu`."""
    units = [(f"{name}/conv", nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False))]
    n = make_norm(norm, out_ch)
    if n is not None:
        units.append((f"{name}/norm", n))
    units.append((f"{name}/relu", nn.ReLU(inplace=True)))
    return units


def _dw_unit(in_ch: int, out_ch: int, name: str, norm: str, *, stride: int = 1) -> list:
    """Depthwise 3x3 -> pointwise 1x1 -> norm -> ReLU (the depthwise conv has out_ch groups, as upstream)."""
    units = [(f"{name}/dw_conv3x3", nn.Conv2d(in_ch, out_ch, 3, stride, 1, groups=out_ch, bias=False)),
             (f"{name}/pw_conv1x1", nn.Conv2d(in_ch, out_ch, 1, 1, 0, bias=False))]
    n = make_norm(norm, out_ch)
    if n is not None:
        units.append((f"{name}/pw_norm", n))
    units.append((f"{name}/pw_relu", nn.ReLU(inplace=True)))
    return units


class DFConv3x3(nn.Module):
    """centermask2's deformable 3x3 unit: `<name>/conv_offset` (with bias) predicts the offsets (and
    the modulation mask), `<name>/conv` is the deformable conv, then `<name>/norm` and ReLU."""

    def __init__(self, in_ch: int, out_ch: int, name: str, norm: str, *, modulated: bool, groups: int):
        super().__init__()
        self.modulated = modulated
        self.names = (f"{name}/conv_offset", f"{name}/conv", f"{name}/norm")
        self.add_module(self.names[0], nn.Conv2d(in_ch, (27 if modulated else 18) * groups, 3, 1, 1))
        self.add_module(self.names[1], DeformConv(in_ch, out_ch, 3, padding=1, deformable_groups=groups))
        self.add_module(self.names[2], make_norm(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset_conv, conv, norm = (getattr(self, n) for n in self.names)
        offset, mask = split_offset_mask(offset_conv(x), self.modulated)
        return F.relu(norm(conv(x, offset, mask)))


class EffectiveSE(nn.Module):
    """eSE: global average pool -> one 1x1 conv (no channel reduction) -> hard sigmoid -> rescale."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(F.adaptive_avg_pool2d(x, 1))
        return x * (F.relu6(gate + 3.0) / 6.0)


class OSAModule(nn.Module):
    """One-shot aggregation: a chain of 3x3 convs whose outputs (and the input) are concatenated
    once, aggregated by a 1x1 conv, gated by eSE, plus an identity shortcut when `identity`."""

    def __init__(self, in_ch: int, stage_ch: int, concat_ch: int, layer_per_block: int, name: str, *,
                 norm: str, identity: bool = False, depthwise: bool = False, dcn: Optional[dict] = None):
        """`dcn`: {"modulated": bool, "groups": int} makes the 3x3 convs deformable (not the depthwise ones,
        as centermask2)."""
        super().__init__()
        self.identity = identity
        self.reduce = depthwise and in_ch != stage_ch
        if self.reduce:
            self.conv_reduction = nn.Sequential(OrderedDict(
                _conv_unit(in_ch, stage_ch, f"{name}_reduction_0", norm, kernel=1)))
        self.layers = nn.ModuleList()
        ch = in_ch
        for i in range(layer_per_block):
            if dcn is not None and not depthwise:
                self.layers.append(DFConv3x3(ch, stage_ch, f"{name}_{i}", norm, **dcn))
            else:
                unit = _dw_unit(stage_ch, stage_ch, f"{name}_{i}", norm) if depthwise else \
                    _conv_unit(ch, stage_ch, f"{name}_{i}", norm)
                self.layers.append(nn.Sequential(OrderedDict(unit)))
            ch = stage_ch
        self.concat = nn.Sequential(OrderedDict(
            _conv_unit(in_ch + layer_per_block * stage_ch, concat_ch, f"{name}_concat", norm, kernel=1)))
        self.ese = EffectiveSE(concat_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        y = self.conv_reduction(x) if self.reduce else x
        for layer in self.layers:
            y = layer(y)
            outputs.append(y)
        y = self.ese(self.concat(torch.cat(outputs, dim=1)))
        return y + x if self.identity else y


class VoVNet(nn.Module):
    """VoVNet bottom-up network: 3-conv stem (stride 4), then stage2..stage5 of OSA modules
    (stage3..5 start with a 3x3/2 max-pool, ceil mode).

    Args:
        spec: a VOVNET_SPECS entry.
        out_features: names returned by forward, among "stem", "stage2".."stage5".
        in_channels: input channels; norm: detectron2 norm name ("FrozenBN", "BN", "GN", ...).
    """

    size_divisibility = 0  # no constraint on the input size without an FPN on top

    def __init__(self, spec: VoVNetSpec, out_features: Sequence[str], *, in_channels: int = 3, norm: str = "FrozenBN",
                 stage_with_dcn: Sequence[bool] = (False,) * 4, with_modulated_dcn: bool = False,
                 deformable_groups: int = 1):
        super().__init__()
        if len(stage_with_dcn) != 4:
            raise ValueError(f"STAGE_WITH_DCN needs 4 values (stage2..stage5), got {list(stage_with_dcn)}")
        dcn = {"modulated": bool(with_modulated_dcn), "groups": int(deformable_groups)}
        unknown = [f for f in out_features if f not in ("stem",) + STAGE_NAMES]
        if unknown:
            raise ValueError(f"VoVNet has no outputs {unknown}; it has stem, {', '.join(STAGE_NAMES)}")
        self.out_features = tuple(out_features)
        s0, s1, s2 = spec.stem
        unit = _dw_unit if spec.depthwise else _conv_unit
        stem = _conv_unit(in_channels, s0, "stem_1", norm, stride=2)
        stem += unit(s0, s1, "stem_2", norm)
        stem += unit(s1, s2, "stem_3", norm, stride=2)
        self.stem = nn.Sequential(OrderedDict(stem))
        self._shapes = {"stem": ShapeSpec(s2, 4)}
        in_ch, stride = s2, 4
        for i, name in enumerate(STAGE_NAMES):
            stage_num = i + 2
            modules = [] if stage_num == 2 else [("Pooling", nn.MaxPool2d(3, 2, ceil_mode=True))]
            stride = stride if stage_num == 2 else stride * 2
            for b in range(spec.block_per_stage[i]):
                mod_name = f"OSA{stage_num}_{b + 1}"
                modules.append((mod_name, OSAModule(in_ch if b == 0 else spec.stage_out_ch[i], spec.stage_conv_ch[i],
                                                    spec.stage_out_ch[i], spec.layer_per_block, mod_name, norm=norm,
                                                    identity=b > 0, depthwise=spec.depthwise,
                                                    dcn=dcn if stage_with_dcn[i] else None)))
            self.add_module(name, nn.Sequential(OrderedDict(modules)))
            self._shapes[name] = ShapeSpec(spec.stage_out_ch[i], stride)
            in_ch = spec.stage_out_ch[i]

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {f: self._shapes[f] for f in self.out_features}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        x = self.stem(x)
        if "stem" in self.out_features:
            out["stem"] = x
        for name in STAGE_NAMES:
            x = getattr(self, name)(x)
            if name in self.out_features:
                out[name] = x
        return out
