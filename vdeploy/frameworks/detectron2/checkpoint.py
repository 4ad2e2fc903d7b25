"""detectron2 checkpoints under detectron2's module names, whichever naming they were saved with.

Three namings occur in the wild:
- detectron2's own (`backbone.bottom_up.res2.0.conv1.weight`): kept as is.
- Caffe2 / Detectron (the `.pkl` model zoo of Detectron and the MSRA ImageNet backbones):
  flat blob names such as `res2_0_branch2a_w`, `res_conv1_bn_s`, `fpn_inner_res5_2_sum_w`,
  `rpn_cls_logits_fpn2_w`, `cls_score_w`, `_[mask]_fcn1_w`. Besides renaming, their class
  outputs put the background class first where detectron2 puts it last (`cls_score`) or has none
  (`bbox_pred`, the mask predictor), and their frozen BatchNorms (Caffe2 AffineChannel) carry no
  running statistics, which are then filled with mean 0 / variance 1 as detectron2 does.
- torchvision's ImageNet ResNets (`layer1.0.conv1.weight`, `bn1.running_mean`, `downsample.0`).

Backbone-only checkpoints name the ResNet without the model's prefix (`stem.conv1.weight`,
`res2.0.conv1.weight`); pass `model_keys` to place them (and anything else) in a model by
unique dotted suffix, e.g. `res5.0.conv1.weight` -> `roi_heads.res5.0.conv1.weight` in a C4 model.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping, Optional

import torch

from ...errors import CheckpointError

# Caffe2 parameter suffixes -> detectron2 leaf names, longest first so that `_bn_s` wins over `_s`.
_C2_PARAM_SUFFIXES = (
    ("_bn_riv", "norm.running_var"), ("_bn_rm", "norm.running_mean"), ("_bn_s", "norm.weight"),
    ("_bn_b", "norm.bias"), ("_gn_s", "norm.weight"), ("_gn_b", "norm.bias"), ("_w", "weight"), ("_b", "bias"),
)
# (blob name pattern, detectron2 module name, section); the section decides the model prefix.
_C2_MODULES = tuple((re.compile(f"(?:{p})$"), name, section) for p, name, section in (
    (r"conv1|res_conv1", "stem.conv1", "bottom_up"),
    (r"res(?P<s>\d)_(?P<b>\d+)_branch1", "res{s}.{b}.shortcut", "bottom_up"),
    (r"res(?P<s>\d)_(?P<b>\d+)_branch2a", "res{s}.{b}.conv1", "bottom_up"),
    (r"res(?P<s>\d)_(?P<b>\d+)_branch2b", "res{s}.{b}.conv2", "bottom_up"),
    (r"res(?P<s>\d)_(?P<b>\d+)_branch2c", "res{s}.{b}.conv3", "bottom_up"),
    (r"fpn_inner_res(?P<s>\d)_\d+_sum(_lateral)?", "fpn_lateral{s}", "fpn"),
    (r"fpn_res(?P<s>\d)_\d+_sum", "fpn_output{s}", "fpn"),
    (r"conv_rpn(_fpn2)?", "rpn_head.conv", "proposal_generator"),
    (r"rpn_bbox_pred(_fpn2)?", "rpn_head.anchor_deltas", "proposal_generator"),
    (r"rpn_cls_logits(_fpn2)?", "rpn_head.objectness_logits", "proposal_generator"),
    (r"fc6", "box_head.fc1", "roi_heads"),
    (r"fc7", "box_head.fc2", "roi_heads"),
    (r"head_conv(?P<n>\d+)", "box_head.conv{n}", "roi_heads"),
    (r"cls_score", "box_predictor.cls_score", "roi_heads"),
    (r"bbox_pred", "box_predictor.bbox_pred", "roi_heads"),
    (r"(_\[mask\]_)?mask_fcn(?P<n>\d+)|_\[mask\]_fcn(?P<m>\d+)", "mask_head.mask_fcn{n}{m}", "roi_heads"),
    (r"conv5_mask", "mask_head.deconv", "roi_heads"),
    (r"mask_fcn_logits", "mask_head.predictor", "roi_heads"),
    (r"conv_fcn(?P<n>\d+)", "keypoint_head.conv_fcn{n}", "roi_heads"),
    (r"kps_score_lowres", "keypoint_head.score_lowres", "roi_heads"),
    (r"kps_score", "keypoint_head.score", "roi_heads"),
))
_TORCHVISION_MODULES = tuple((re.compile(p), r) for p, r in (
    (r"^conv1\.", "stem.conv1."), (r"^bn1\.", "stem.conv1.norm."), (r"^layer(\d)\.", None),
    (r"\.bn(\d)\.", r".conv\1.norm."), (r"\.downsample\.0\.", ".shortcut."), (r"\.downsample\.1\.", ".shortcut.norm."),
))


def checkpoint_style(keys: Iterable[str]) -> str:
    """"caffe2", "torchvision" or "detectron2", from the key names alone."""
    keys = list(keys)
    if keys and not any("." in k for k in keys):
        return "caffe2"
    if any(k.startswith("layer1.") for k in keys) and "conv1.weight" in keys:
        return "torchvision"
    return "detectron2"


def _c2_rename(blob: str) -> Optional[tuple[str, str, str]]:
    """(module name, leaf, section) of a Caffe2 blob, or None when the blob is not a known layer."""
    for suffix, leaf in _C2_PARAM_SUFFIXES:
        if blob.endswith(suffix):
            base = blob[: -len(suffix)]
            for pattern, template, section in _C2_MODULES:
                m = pattern.match(base)
                if m:
                    fields = {k: v or "" for k, v in m.groupdict().items()}
                    return template.format(**fields), leaf, section
            return None
    return None


def _from_caffe2(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {blob: _c2_rename(blob) for blob in sd}
    sections = {r[2] for r in renamed.values() if r}
    has_fpn, has_box_predictor = "fpn" in sections, any(r and r[0].startswith("box_predictor") for r in renamed.values())
    backbone_only = sections <= {"bottom_up"}
    out: dict[str, torch.Tensor] = {}
    frozen_bn: set[str] = set()
    for blob, value in sd.items():
        if renamed[blob] is None:
            out[blob] = value  # unknown blob (e.g. the ImageNet classifier fc1000): reported as unexpected
            continue
        module, leaf, section = renamed[blob]
        if section == "bottom_up":
            if backbone_only:
                prefix = ""
            elif has_fpn:
                prefix = "backbone.bottom_up."
            else:  # C4 models run res5 inside the ROI heads
                prefix = "roi_heads." if module.startswith("res5.") and has_box_predictor else "backbone."
        else:
            prefix = "backbone." if section == "fpn" else f"{section}."
        name = f"{prefix}{module}.{leaf}"
        if name in out:
            raise CheckpointError(f"Caffe2 blobs map to {name} twice (second: {blob})")
        out[name] = _drop_background(module, value)
        if blob.endswith(("_bn_s", "_bn_b")):
            frozen_bn.add(f"{prefix}{module}.norm.")
    for norm in frozen_bn:  # Caffe2 AffineChannel: scale and shift only
        channels = out[norm + "weight"].shape[0] if norm + "weight" in out else out[norm + "bias"].shape[0]
        out.setdefault(norm + "running_mean", torch.zeros(channels))
        out.setdefault(norm + "running_var", torch.ones(channels))
    return out


def _drop_background(module: str, value: torch.Tensor) -> torch.Tensor:
    """Detectron's class outputs start with the background class; detectron2's end with it (scores)
    or leave it out (box deltas, masks)."""
    if module == "box_predictor.cls_score":
        return torch.cat([value[1:], value[:1]])
    if module == "box_predictor.bbox_pred" and value.shape[0] > 4:
        return value[4:]
    if module == "mask_head.predictor" and value.shape[0] > 1:
        return value[1:]
    return value


def _from_torchvision(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        name = key
        for pattern, replacement in _TORCHVISION_MODULES:
            if replacement is None:  # layer1..4 are res2..5
                name = pattern.sub(lambda m: f"res{int(m.group(1)) + 1}.", name)
            else:
                name = pattern.sub(replacement, name)
        out[name] = value
    return out


def place_in_model(sd: Mapping[str, torch.Tensor], model_keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """Rename each key the model lacks to the one model key that ends with `.<key>`, if exactly one does."""
    model_keys = list(model_keys)
    known = set(model_keys)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        target = key
        if key not in known:
            matches = [m for m in model_keys if m.endswith("." + key)]
            if len(matches) > 1:
                raise CheckpointError(f"checkpoint weight {key} fits several model weights "
                                      f"({', '.join(matches[:3])}); cannot place it")
            target = matches[0] if matches else key
        if target in out:
            raise CheckpointError(f"two checkpoint weights land on model weight {target}")
        out[target] = value
    return out


def detectron2_state_dict(ckpt_state_dict: Mapping, *, model_keys: Optional[Iterable[str]] = None
                          ) -> dict[str, torch.Tensor]:
    """The checkpoint's weights as tensors named like detectron2's modules (see the module doc)."""
    sd = {str(k): v if isinstance(v, torch.Tensor) else torch.as_tensor(v) for k, v in ckpt_state_dict.items()}
    if sd and all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    style = checkpoint_style(sd)
    if style == "caffe2":
        sd = _from_caffe2(sd)
    elif style == "torchvision":
        sd = _from_torchvision(sd)
    return place_in_model(sd, model_keys) if model_keys is not None else sd
