"""Config -> keyword arguments for mmseg's K-Net decode head (`IterativeDecodeHead`: a
kernel-generate head, then `num_stages` KernelUpdateHeads with their KernelUpdators; the model in
vdeploy.models.mmseg.knet_head). Called from build.py's head_kwargs and build_head.

Settings mmseg's inference cannot run (kernels other than 1x1, a KernelUpdator whose widths differ)
and settings these modules do not implement are refused with a one-line ConfigError naming the
key. Training-only keys (dropout, kernel_init, losses, init_cfg) change nothing at inference and are
ignored.
"""
from __future__ import annotations

from typing import Any

from ...errors import ConfigError

# mmseg's own _forward_feature is defined by these heads only; heads that merely inherit it (NLHead
# from FCNHead, DepthwiseSeparableASPPHead from ASPPHead) would silently lose their extra blocks.
GENERATE_HEADS = ("FCNHead", "PSPHead", "ASPPHead", "UPerHead")
_FEAT_TRANSFORM_KEYS = {"kernel_size", "conv_cfg", "norm_cfg", "act_cfg"}
_ITERATIVE_KEYS = {"type", "num_stages", "kernel_generate_head", "kernel_update_head", "init_cfg"}


def _b():
    # build.py imports this module: its helpers are looked up at call time
    from . import build

    return build


def _int(part: dict, key: str, default, where: str, low: int = 1) -> int:
    value = part.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{where}.{key} must be an int >= {low}, got {value!r}")
    return value


def _flag(part: dict, key: str, default: bool, where: str) -> bool:
    value = part.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be True or False, got {value!r}")
    return value


def _ln(part: dict, where: str) -> dict:
    norm = _b().norm_spec(part, where, {"type": "LN"})
    if norm is None or norm["type"] != "LN":
        raise ConfigError(f"{where}.norm_cfg must be LN")
    return {"type": "LN", "eps": norm.get("eps", 1e-5)}


def kernel_updator(cfg: Any, where: str, head_channels: int) -> dict:
    if not isinstance(cfg, dict) or cfg.get("type") != "KernelUpdator":
        kind = cfg.get("type", "DynamicConv") if isinstance(cfg, dict) else cfg
        raise ConfigError(f"{where} type {kind!r} is not supported; expected 'KernelUpdator'")
    width = _int(cfg, "in_channels", 256, where)
    feat = _int(cfg, "feat_channels", 64, where)
    out = cfg.get("out_channels") or width
    # its gates are Linear(in_channels, ...) applied to feat_channels-wide tensors, and its output
    # is reshaped back to the head's channels: mmseg runs only when all three widths agree
    if feat != width or out != width:
        raise ConfigError(f"{where}: in_channels, feat_channels and out_channels must be equal "
                          f"(mmseg's KernelUpdator runs only then), got {width}, {feat}, {out}")
    if head_channels % width:
        raise ConfigError(f"{where}.in_channels {width} must divide the KernelUpdateHead's in_channels "
                          f"{head_channels}")
    return {"in_channels": width, "feat_channels": feat, "out_channels": out,
            "gate_sigmoid": _flag(cfg, "gate_sigmoid", True, where),
            "gate_norm_act": _flag(cfg, "gate_norm_act", False, where),
            "activate_out": _flag(cfg, "activate_out", False, where),
            "norm": _ln(cfg, where), "act": _b().act_spec(cfg, where, {"type": "ReLU"})}


def _feat_transform(cfg: Any, where: str):
    if cfg is None:
        return None
    if not isinstance(cfg, dict) or set(cfg) - _FEAT_TRANSFORM_KEYS:
        raise ConfigError(f"{where} {cfg!r} is not supported (keys: {sorted(_FEAT_TRANSFORM_KEYS)})")
    if (cfg.get("conv_cfg") or {"type": "Conv2d"}).get("type") not in ("Conv", "Conv2d"):
        raise ConfigError(f"{where}.conv_cfg {cfg['conv_cfg']!r} is not supported (only Conv2d)")
    return {"kernel_size": _int(cfg, "kernel_size", 1, where), "norm": _b().norm_spec(cfg, where),
            "act": _b().act_spec(cfg, where, {"type": "ReLU"})}


def kernel_update_head(cfg: Any, where: str, channels: int) -> dict:
    if not isinstance(cfg, dict) or cfg.get("type") != "KernelUpdateHead":
        kind = cfg.get("type") if isinstance(cfg, dict) else cfg
        raise ConfigError(f"{where} type {kind!r} is not supported; expected 'KernelUpdateHead'")
    if _int(cfg, "conv_kernel_size", 1, where) != 1:
        raise ConfigError(f"{where}.conv_kernel_size must be 1 (mmseg seeds the kernels from the 1x1 conv_seg)")
    in_channels = _int(cfg, "in_channels", 256, where)
    if in_channels != channels:
        raise ConfigError(f"{where}.in_channels {in_channels} must equal the kernel_generate_head's channels "
                          f"{channels} (its conv_seg weights are the first kernels)")
    if _int(cfg, "out_channels", 256, where) != in_channels:
        raise ConfigError(f"{where}.out_channels must equal in_channels (the mask kernels convolve the features)")
    heads = _int(cfg, "num_heads", 8, where)
    if in_channels % heads:
        raise ConfigError(f"{where}.num_heads {heads} must divide in_channels {in_channels}")
    if _int(cfg, "num_ffn_fcs", 2, where) != 2:
        raise ConfigError(f"{where}.num_ffn_fcs other than 2 is not supported")
    if _int(cfg, "mask_transform_stride", 1, where) not in (1, 2):
        raise ConfigError(f"{where}.mask_transform_stride must be 1 or 2")
    return {"in_channels": in_channels, "out_channels": in_channels, "num_heads": heads,
            "num_mask_fcs": _int(cfg, "num_mask_fcs", 3, where, low=0),
            "feedforward_channels": _int(cfg, "feedforward_channels", 2048, where),
            "with_ffn": _flag(cfg, "with_ffn", True, where),
            "act": _b().act_spec(cfg, where, {"type": "ReLU"}),
            "ffn_act": _b().act_spec(cfg, where, {"type": "ReLU"}, key="ffn_act_cfg"),
            "feat_transform": _feat_transform(cfg.get("feat_transform_cfg"), f"{where}.feat_transform_cfg"),
            "feat_gather_stride": _int(cfg, "feat_gather_stride", 1, where),
            "mask_transform_stride": cfg.get("mask_transform_stride", 1),
            "updator": kernel_updator(cfg.get("kernel_updator_cfg"), f"{where}.kernel_updator_cfg", in_channels)}


def iterative_decode_head(head: dict, where: str) -> dict:
    """An IterativeDecodeHead's kwargs: `num_classes` and `align_corners` (the kernel-generate
    head's, as mmseg takes them), `kernel_generate_head` (build.head_kwargs of it) and one
    KernelUpdateHead kwargs dict per stage in `kernel_update_head`."""
    gen, stages = head.get("kernel_generate_head"), head.get("kernel_update_head")
    extra = sorted(set(head) - _ITERATIVE_KEYS)
    if extra:  # mmseg hands them to nn.Module, which fails (num_classes belongs to the inner heads)
        raise ConfigError(f"{where}: IterativeDecodeHead takes no {extra} (set them in kernel_generate_head)")
    if not isinstance(gen, dict):
        raise ConfigError(f"{where} needs a `kernel_generate_head` dict")
    if gen.get("type") not in GENERATE_HEADS:
        raise ConfigError(f"{where}.kernel_generate_head type {gen.get('type')!r} is not supported; "
                          f"expected one of {list(GENERATE_HEADS)}")
    if not isinstance(stages, (list, tuple)) or not stages:
        raise ConfigError(f"{where} needs a non-empty `kernel_update_head` list")
    if head.get("num_stages") != len(stages):
        raise ConfigError(f"{where}.num_stages {head.get('num_stages')!r} must equal the number of "
                          f"kernel_update_head entries ({len(stages)})")
    gen_kw = _b().head_kwargs(gen, f"{where}.kernel_generate_head")
    return {"type": "IterativeDecodeHead", "num_classes": gen_kw["num_classes"],
            "align_corners": gen_kw["align_corners"], "kernel_generate_head": gen_kw,
            "kernel_update_head": [kernel_update_head(s, f"{where}.kernel_update_head[{i}]", gen_kw["channels"])
                                   for i, s in enumerate(stages)]}
