"""Rename backbone weights from timm / torchvision / detectron2 into vdeploy's native names.

Native naming (`--to native-backbone`); keys carry no prefix unless `--prefix` adds one
(`backbone.bottom_up.` makes a detectron2 R-CNN initialisation).

ResNet: detectron2's names, so a converted file drops into a detectron2-style model.
    stem.conv1.weight, stem.conv1.norm.{weight,bias,running_mean,running_var}
    res{2..5}.{block}.conv{1,2,3}.weight and .norm.*   (basic blocks of R-18/34: conv1, conv2)
    res{2..5}.0.shortcut.weight and .norm.*             (the projection of a stage's first block)
Swin (v1):
    patch_embed.proj.{weight,bias}, patch_embed.norm.{weight,bias}
    stages.{s}.downsample.{norm.weight,norm.bias,reduction.weight}   patch merging that starts
        stage s (s = 1..3); its 4C input is ordered (0,0), (1,0), (0,1), (1,1) as in torchvision/timm
    stages.{s}.blocks.{b}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.{weight,bias}
    stages.{s}.blocks.{b}.attn.relative_position_bias_table
    norm.{weight,bias}
ViT:
    cls_token [1,1,D], pos_embed [1,1+N,D], patch_embed.proj.{weight,bias}
    blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.{weight,bias}
        (attn.qkv rows are q, k, v: torchvision's in_proj_weight as it is)
    norm.{weight,bias}
Buffers that are recomputed from the architecture (Swin's relative_position_index and attn_mask),
BatchNorm step counters and classification heads are not part of a backbone: they are reported
as unused source keys.

The expected target keys and shapes come from a reference independent of the source naming: for
ResNet, detectron2's layout for the depth found (18/34/50/101/152); for Swin and ViT, torchvision's
model built with the dimensions found, renamed. Every source key ends up used or unused, every
target key filled or missing; a shape that disagrees with the reference fails the conversion.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from ..errors import UserError
from ..runtime.io import atomic_write

SOURCES = ("timm", "torchvision", "detectron2")
_BN = {"weight": "weight", "bias": "bias", "running_mean": "running_mean", "running_var": "running_var"}
_C2_BN = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
# detectron2's FrozenBatchNorm2d starts with these statistics; caffe2 checkpoints (MSRA R-50.pkl)
# store BatchNorm folded into scale and bias only, which is what they mean.
_FROZEN_BN_EPS = 1e-5

Rule = tuple[str, Callable[[re.Match], Optional[str]]]


def _resnet_tv_rules() -> list[Rule]:
    stage = lambda m: int(m[1]) + 1  # noqa: E731 - torchvision layer1 is detectron2 res2
    return [
        (r"conv1\.weight", lambda m: "stem.conv1.weight"),
        (r"bn1\.(\w+)", lambda m: f"stem.conv1.norm.{_BN[m[1]]}" if m[1] in _BN else None),
        (r"layer(\d)\.(\d+)\.conv(\d)\.weight", lambda m: f"res{stage(m)}.{m[2]}.conv{m[3]}.weight"),
        (r"layer(\d)\.(\d+)\.bn(\d)\.(\w+)",
         lambda m: f"res{stage(m)}.{m[2]}.conv{m[3]}.norm.{_BN[m[4]]}" if m[4] in _BN else None),
        (r"layer(\d)\.(\d+)\.downsample\.0\.weight", lambda m: f"res{stage(m)}.{m[2]}.shortcut.weight"),
        (r"layer(\d)\.(\d+)\.downsample\.1\.(\w+)",
         lambda m: f"res{stage(m)}.{m[2]}.shortcut.norm.{_BN[m[3]]}" if m[3] in _BN else None),
    ]


def _resnet_d2_rules() -> list[Rule]:
    return [(r"((?:stem|res[2-5])\.[\w.]+)", lambda m: None if m[1].endswith("num_batches_tracked") else m[1])]


def _resnet_caffe2_rules() -> list[Rule]:
    conv = {"a": 1, "b": 2, "c": 3}
    return [
        (r"conv1_w", lambda m: "stem.conv1.weight"),
        (r"res_conv1_bn_(s|b|rm|riv)", lambda m: f"stem.conv1.norm.{_C2_BN[m[1]]}"),
        (r"res(\d)_(\d+)_branch2([abc])_w", lambda m: f"res{m[1]}.{m[2]}.conv{conv[m[3]]}.weight"),
        (r"res(\d)_(\d+)_branch2([abc])_bn_(s|b|rm|riv)",
         lambda m: f"res{m[1]}.{m[2]}.conv{conv[m[3]]}.norm.{_C2_BN[m[4]]}"),
        (r"res(\d)_(\d+)_branch1_w", lambda m: f"res{m[1]}.{m[2]}.shortcut.weight"),
        (r"res(\d)_(\d+)_branch1_bn_(s|b|rm|riv)", lambda m: f"res{m[1]}.{m[2]}.shortcut.norm.{_C2_BN[m[3]]}"),
    ]


_SWIN_BLOCK = {"norm1": "norm1", "norm2": "norm2", "attn.qkv": "attn.qkv", "attn.proj": "attn.proj",
               "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_BLOCK_PARAM = r"(norm1|norm2|attn\.qkv|attn\.proj|mlp\.0|mlp\.3|mlp\.fc1|mlp\.fc2)\.(weight|bias)"


def _swin_tv_rules() -> list[Rule]:
    def merging(m):
        idx = int(m[1])
        return f"stages.{idx // 2}.downsample.{m[2]}" if idx >= 2 and idx % 2 == 0 else None

    def block(m):
        idx = int(m[1])
        return f"stages.{(idx - 1) // 2}.blocks.{m[2]}.{_SWIN_BLOCK[m[3]]}.{m[4]}" if idx % 2 else None

    return [
        (r"features\.0\.0\.(weight|bias)", lambda m: f"patch_embed.proj.{m[1]}"),
        (r"features\.0\.2\.(weight|bias)", lambda m: f"patch_embed.norm.{m[1]}"),
        (r"features\.(\d+)\.(reduction\.weight|norm\.weight|norm\.bias)", merging),
        (r"features\.(\d+)\.(\d+)\." + _BLOCK_PARAM, block),
        (r"features\.(\d+)\.(\d+)\.attn\.relative_position_bias_table",
         lambda m: f"stages.{(int(m[1]) - 1) // 2}.blocks.{m[2]}.attn.relative_position_bias_table"),
        (r"norm\.(weight|bias)", lambda m: f"norm.{m[1]}"),
    ]


def _swin_timm_rules(merging_ends_stage: bool) -> list[Rule]:
    # timm < 0.9 and the official Swin code put patch merging at the end of a stage (layers.0..2),
    # timm >= 0.9 at the start of the next one (layers.1..3).
    shift = 1 if merging_ends_stage else 0
    return [
        (r"patch_embed\.(proj|norm)\.(weight|bias)", lambda m: f"patch_embed.{m[1]}.{m[2]}"),
        (r"layers\.(\d)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)",
         lambda m: f"stages.{int(m[1]) + shift}.downsample.{m[2]}"),
        (r"layers\.(\d)\.blocks\.(\d+)\." + _BLOCK_PARAM,
         lambda m: f"stages.{m[1]}.blocks.{m[2]}.{_SWIN_BLOCK[m[3]]}.{m[4]}"),
        (r"layers\.(\d)\.blocks\.(\d+)\.attn\.relative_position_bias_table",
         lambda m: f"stages.{m[1]}.blocks.{m[2]}.attn.relative_position_bias_table"),
        (r"norm\.(weight|bias)", lambda m: f"norm.{m[1]}"),
    ]


def _vit_tv_rules() -> list[Rule]:
    part = {"ln_1": "norm1", "ln_2": "norm2", "self_attention.out_proj": "attn.proj", "mlp.0": "mlp.fc1",
            "mlp.3": "mlp.fc2", "mlp.linear_1": "mlp.fc1", "mlp.linear_2": "mlp.fc2"}
    return [
        (r"class_token", lambda m: "cls_token"),
        (r"conv_proj\.(weight|bias)", lambda m: f"patch_embed.proj.{m[1]}"),
        (r"encoder\.pos_embedding", lambda m: "pos_embed"),
        (r"encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_(weight|bias)",
         lambda m: f"blocks.{m[1]}.attn.qkv.{m[2]}"),
        (r"encoder\.layers\.encoder_layer_(\d+)\.(ln_1|ln_2|self_attention\.out_proj|mlp\.0|mlp\.3|"
         r"mlp\.linear_1|mlp\.linear_2)\.(weight|bias)", lambda m: f"blocks.{m[1]}.{part[m[2]]}.{m[3]}"),
        (r"encoder\.ln\.(weight|bias)", lambda m: f"norm.{m[1]}"),
    ]


def _vit_timm_rules() -> list[Rule]:
    return [
        (r"(cls_token|pos_embed|patch_embed\.proj\.(?:weight|bias)|norm\.(?:weight|bias))", lambda m: m[1]),
        (r"blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)", lambda m: m[0]),
    ]


@dataclass(frozen=True)
class Naming:
    arch: str                  # resnet | swin | vit
    anchor: str                # a key every checkpoint of this naming has (its prefix is stripped)
    rules: Callable[[dict], list[Rule]]
    note: str = ""
    affine_only_bn: bool = False   # BatchNorm stored as scale and bias only (caffe2)


_TV_RESNET_NOTE = ("torchvision/timm ResNets put the stride in the 3x3 conv and expect RGB input normalised "
                   "with ImageNet mean/std: use RESNETS.STRIDE_IN_1X1=False, INPUT.FORMAT=RGB, PIXEL_MEAN "
                   "[123.675,116.28,103.53], PIXEL_STD [58.395,57.12,57.375]")
NAMINGS = {
    "torchvision": [Naming("resnet", "layer1.0.conv1.weight", lambda sd: _resnet_tv_rules(), _TV_RESNET_NOTE),
                    Naming("swin", "features.0.0.weight", lambda sd: _swin_tv_rules()),
                    Naming("vit", "conv_proj.weight", lambda sd: _vit_tv_rules())],
    "timm": [Naming("resnet", "layer1.0.conv1.weight", lambda sd: _resnet_tv_rules(), _TV_RESNET_NOTE),
             Naming("swin", "layers.0.blocks.0.attn.qkv.weight",
                    lambda sd: _swin_timm_rules(any(k.startswith("layers.0.downsample.") for k in sd))),
             Naming("vit", "blocks.0.attn.qkv.weight", lambda sd: _vit_timm_rules())],
    "detectron2": [Naming("resnet", "stem.conv1.weight", lambda sd: _resnet_d2_rules()),
                   Naming("resnet", "res2_0_branch2a_w", lambda sd: _resnet_caffe2_rules(), affine_only_bn=True)],
}


@dataclass
class Conversion:
    arch: str
    state_dict: dict[str, torch.Tensor]         # native names
    used: list[str]                              # source keys that went into the output
    unused: list[str]                            # source keys that did not
    filled: list[str]                            # reference keys present with the right shape
    missing: list[str]                           # reference keys no source key filled
    mismatched: list[tuple[str, list, list]]     # (key, expected shape, source shape)
    synthesized: list[str] = field(default_factory=list)   # filled with identity statistics
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.mismatched

    def summary(self) -> dict:
        return {"arch": self.arch, "used": self.used, "unused": self.unused, "filled": self.filled,
                "missing": self.missing, "synthesized": self.synthesized, "notes": self.notes,
                "mismatched": [{"key": k, "expected": e, "got": g} for k, e, g in self.mismatched]}


def _find_prefix(keys, anchor: str) -> Optional[str]:
    for k in keys:
        if k == anchor or k.endswith("." + anchor):
            return k[: len(k) - len(anchor)]
    return None


def _rename(sd: dict, naming: Naming, prefix: str):
    """-> ({native key: tensor}, {native key: source key}, [unused source keys])."""
    rules = [(re.compile(p), f) for p, f in naming.rules({k[len(prefix):]: v for k, v in sd.items()
                                                         if k.startswith(prefix)})]
    renamed, origin, unused = {}, {}, []
    for key, tensor in sd.items():
        target = None
        if key.startswith(prefix):
            short = key[len(prefix):]
            for pattern, fn in rules:
                m = pattern.fullmatch(short)
                if m:
                    target = fn(m)
                    break
        if target is None or target in renamed:
            unused.append(key)
        else:
            renamed[target] = tensor
            origin[target] = key
    return renamed, origin, unused


def _resnet_reference(sd: dict) -> tuple[str, dict[str, tuple]]:
    blocks = [len({k.split(".")[1] for k in sd if k.startswith(f"res{s}.")}) for s in range(2, 6)]
    bottleneck = any(".conv3." in k for k in sd)
    depths = {(2, 2, 2, 2, False): 18, (3, 4, 6, 3, False): 34, (3, 4, 6, 3, True): 50,
              (3, 4, 23, 3, True): 101, (3, 8, 36, 3, True): 152}
    depth = depths.get((*blocks, bottleneck))
    if depth is None:
        raise UserError(f"ResNet with {blocks} blocks per stage ({'bottleneck' if bottleneck else 'basic'}) "
                        "is not a standard depth (18/34/50/101/152)")
    ref: dict[str, tuple] = {}

    def conv_norm(name, out_c, in_c, k):
        ref[f"{name}.weight"] = (out_c, in_c, k, k)
        for p in _BN.values():
            ref[f"{name}.norm.{p}"] = (out_c,)

    conv_norm("stem.conv1", 64, 3, 7)
    in_c = 64
    for s, n in enumerate(blocks):
        width = 64 * 2 ** s
        out_c = width * 4 if bottleneck else width
        for i in range(n):
            p = f"res{s + 2}.{i}"
            if in_c != out_c:
                conv_norm(f"{p}.shortcut", out_c, in_c, 1)
            if bottleneck:
                conv_norm(f"{p}.conv1", width, in_c, 1)
                conv_norm(f"{p}.conv2", width, width, 3)
                conv_norm(f"{p}.conv3", out_c, width, 1)
            else:
                conv_norm(f"{p}.conv1", out_c, in_c, 3)
                conv_norm(f"{p}.conv2", out_c, out_c, 3)
            in_c = out_c
    return f"resnet{depth}", ref


def _shape(sd, key, what):
    if key not in sd:
        raise UserError(f"not a complete {what} state dict: {key} is absent after renaming")
    return tuple(sd[key].shape)


def _torchvision_reference(model_fn, rules) -> dict[str, tuple]:
    """Shapes of torchvision's model renamed by `rules`; buffers no rule maps drop out."""
    with torch.device("meta"):
        model = model_fn()
    renamed, _, _ = _rename(model.state_dict(), Naming("", "", lambda sd: rules), "")
    return {k: tuple(v.shape) for k, v in renamed.items()}


def _swin_reference(sd: dict) -> tuple[str, dict[str, tuple]]:
    from torchvision.models.swin_transformer import SwinTransformer

    dim, _, patch, _ = _shape(sd, "patch_embed.proj.weight", "Swin")
    n_stages = len({k.split(".")[1] for k in sd if k.startswith("stages.")})
    depths = [len({k.split(".")[3] for k in sd if k.startswith(f"stages.{s}.blocks.")}) for s in range(n_stages)]
    heads, window = [], 7
    for s in range(n_stages):
        rows, h = _shape(sd, f"stages.{s}.blocks.0.attn.relative_position_bias_table", "Swin")
        heads.append(h)
        window = (math.isqrt(rows) + 1) // 2
    mlp_ratio = _shape(sd, "stages.0.blocks.0.mlp.fc1.weight", "Swin")[0] / dim
    ref = _torchvision_reference(
        lambda: SwinTransformer(patch_size=[patch, patch], embed_dim=dim, depths=depths, num_heads=heads,
                                window_size=[window, window], mlp_ratio=mlp_ratio),
        _swin_tv_rules())
    return f"swin(embed_dim={dim}, depths={depths}, heads={heads}, window={window})", ref


def _vit_reference(sd: dict) -> tuple[str, dict[str, tuple]]:
    from torchvision.models.vision_transformer import VisionTransformer

    dim, _, patch, _ = _shape(sd, "patch_embed.proj.weight", "ViT")
    layers = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    mlp_dim = _shape(sd, "blocks.0.mlp.fc1.weight", "ViT")[0]
    tokens = _shape(sd, "pos_embed", "ViT")[1]
    image = math.isqrt(tokens - 1) * patch
    # The number of heads changes no weight shape; one head keeps any width valid.
    ref = _torchvision_reference(
        lambda: VisionTransformer(image_size=image, patch_size=patch, num_layers=layers, num_heads=1,
                                  hidden_dim=dim, mlp_dim=mlp_dim),
        _vit_tv_rules())
    return f"vit(dim={dim}, layers={layers}, patch={patch}, image={image})", ref


_REFERENCES = {"resnet": _resnet_reference, "swin": _swin_reference, "vit": _vit_reference}


def convert_state_dict(source_sd: dict[str, torch.Tensor], source: str) -> Conversion:
    """Rename `source_sd` (named as `source` names it) into native backbone names, with coverage."""
    if source not in NAMINGS:
        raise UserError(f"--from {source!r}: expected one of {', '.join(SOURCES)}")
    for naming in NAMINGS[source]:
        prefix = _find_prefix(source_sd, naming.anchor)
        if prefix is not None:
            break
    else:
        anchors = ", ".join(n.anchor for n in NAMINGS[source])
        raise UserError(f"no {source} backbone naming recognised: expected a key like {anchors}")
    renamed, origin, unused = _rename(source_sd, naming, prefix)
    arch, reference = _REFERENCES[naming.arch](renamed)
    # Renamed keys the reference does not know are not part of the backbone either.
    unused += [origin[k] for k in renamed if k not in reference]
    used = [origin[k] for k in renamed if k in reference]

    conv = Conversion(arch, {}, used, unused, [], [], [], notes=[naming.note] if naming.note else [])
    for key, shape in reference.items():
        tensor = renamed.get(key)
        if tensor is None and naming.affine_only_bn and key.endswith((".running_mean", ".running_var")) \
                and key.rsplit(".", 1)[0] + ".weight" in renamed:
            # identity statistics, which is what detectron2 itself ends up with for these files
            fill = 0.0 if key.endswith("mean") else 1.0 - _FROZEN_BN_EPS
            tensor = torch.full(shape, fill)
            conv.synthesized.append(key)
        if tensor is None:
            conv.missing.append(key)
        elif tuple(tensor.shape) != shape:
            conv.mismatched.append((key, list(shape), list(tensor.shape)))
        else:
            conv.state_dict[key] = tensor
            conv.filled.append(key)
    return conv


def load_source(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint (.pth, detectron2 .pkl, .safetensors), loaded without running code."""
    from ..frameworks.checkpoint import load_checkpoint

    return load_checkpoint(path).state_dict


def save_state_dict(sd: dict[str, torch.Tensor], out: str | Path) -> None:
    """`.safetensors` -> safetensors, `.pth` / `.pt` -> torch.save of the dict; written atomically."""
    out = Path(out)
    tensors = {k: v.detach().contiguous().clone() for k, v in sd.items()}
    if out.suffix == ".safetensors":
        from safetensors.torch import save
        data = save(tensors)
    elif out.suffix in (".pth", ".pt"):
        buf = io.BytesIO()
        torch.save(tensors, buf)
        data = buf.getvalue()
    else:
        raise UserError(f"{out}: output must end in .safetensors, .pth or .pt")
    atomic_write(out, data)
