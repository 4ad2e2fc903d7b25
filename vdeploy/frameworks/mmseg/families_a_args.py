"""Config -> keyword arguments for the Twins (PCPVT, SVT), ConvNeXt and PoolFormer (mmpretrain),
MSCAN (SegNeXt) backbones, and the size-multiple steps those configs use (read once here, at the
edge; the modules in vdeploy.models.mmseg take explicit arguments)."""
from __future__ import annotations

from typing import Optional

from ...errors import ConfigError

# mmpretrain's named architectures (ConvNeXt: depths, channels; PoolFormer: layers, embed_dims,
# mlp_ratios, layer_scale_init_value).
_CONVNEXT_ARCHS = {
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)), "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "pico": ((2, 2, 6, 2), (64, 128, 256, 512)), "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)), "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)), "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)), "huge": ((3, 3, 27, 3), (352, 704, 1408, 2816))}
_POOLFORMER_ARCHS = {
    "s12": ((2, 2, 6, 2), (64, 128, 320, 512), 1e-5), "s24": ((4, 4, 12, 4), (64, 128, 320, 512), 1e-5),
    "s36": ((6, 6, 18, 6), (64, 128, 320, 512), 1e-6), "m36": ((6, 6, 18, 6), (96, 192, 384, 768), 1e-6),
    "m48": ((8, 8, 24, 8), (96, 192, 384, 768), 1e-6)}


def _tup(v):
    return tuple(_tup(x) for x in v) if isinstance(v, (list, tuple)) else v


def _ints(bb: dict, key: str, default, where: str) -> tuple:
    value = _tup(bb.get(key, default))
    if isinstance(value, int):
        value = (value,)
    if not (isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f"{where}.{key} must be a list of ints, got {value!r}")
    return value


def _ln_eps(bb: dict, where: str, default_eps: float, types=("LN",)) -> float:
    norm = bb.get("norm_cfg") or {"type": types[0]}
    if not isinstance(norm, dict) or norm.get("type") not in types:
        raise ConfigError(f"{where}.norm_cfg must be one of {types}, got {norm!r}")
    return float(norm.get("eps", default_eps))


def _act(bb: dict, where: str) -> dict:
    act = bb.get("act_cfg") or {"type": "GELU"}
    if not isinstance(act, dict) or act.get("type") != "GELU":
        raise ConfigError(f"{where}.act_cfg: only GELU is supported, got {act!r}")
    return {"type": "GELU"}


def _stage_indices(value, n: int, key: str, where: str) -> tuple:
    """Out indices with negative ones counted from the end (mmpretrain's convention)."""
    value = (value,) if isinstance(value, int) else _tup(value)
    if not isinstance(value, tuple) or not all(isinstance(i, int) and -n <= i < n for i in value):
        raise ConfigError(f"{where}.{key} must list indices among 0..{n - 1}, got {value!r}")
    return tuple(i % n for i in value)


def twins_kwargs(bb: dict, where: str) -> dict:
    svt = bb.get("type") == "SVT"
    kw = {"in_channels": int(bb.get("in_channels", 3)), "qkv_bias": bool(bb.get("qkv_bias", False)),
          "ln_eps": _ln_eps(bb, where, 1e-5), "norm_after_stage": bool(bb.get("norm_after_stage", svt))}
    defaults = {"embed_dims": (64, 128, 256), "num_heads": (1, 2, 4), "mlp_ratios": (4, 4, 4), "depths": (4, 4, 4),
                "sr_ratios": (4, 2, 1)} if svt else \
        {"embed_dims": (64, 128, 256, 512), "num_heads": (1, 2, 4, 8), "mlp_ratios": (4, 4, 4, 4),
         "depths": (3, 4, 6, 3), "sr_ratios": (8, 4, 2, 1)}
    defaults.update(patch_sizes=(4, 2, 2, 2), strides=(4, 2, 2, 2))
    for key, default in defaults.items():
        kw[key] = _ints(bb, key, default, where)
    n = len(kw["depths"])
    if any(len(kw[k]) < n for k in defaults):
        raise ConfigError(f"{where}: {', '.join(defaults)} need one entry per stage (len(depths) = {n})")
    for key in defaults:
        kw[key] = kw[key][:n]  # mmseg reads only the first len(depths) entries
    if any(d % h for d, h in zip(kw["embed_dims"], kw["num_heads"])):
        raise ConfigError(f"{where}: embed_dims must be multiples of num_heads")
    kw["out_indices"] = _stage_indices(bb.get("out_indices", (0, 1, 2, 3)), n, "out_indices", where)
    if svt:  # mmseg spells it `windiow_sizes`
        kw["window_sizes"] = _ints(bb, "windiow_sizes", (7, 7, 7), where)
        if len(kw["window_sizes"]) < n or min(kw["window_sizes"]) < 1:
            raise ConfigError(f"{where}.windiow_sizes needs a positive size per stage")
    return kw


def convnext_kwargs(bb: dict, where: str) -> dict:
    arch = bb.get("arch", "tiny")
    if isinstance(arch, dict):
        if "depths" not in arch or "channels" not in arch:
            raise ConfigError(f"{where}.arch dict needs `depths` and `channels`")
        depths, channels = _ints(arch, "depths", (), where + ".arch"), _ints(arch, "channels", (), where + ".arch")
    elif arch in _CONVNEXT_ARCHS:
        depths, channels = _CONVNEXT_ARCHS[arch]
    else:
        raise ConfigError(f"{where}.arch {arch!r} is not one of {sorted(_CONVNEXT_ARCHS)}")
    if len(depths) != len(channels):
        raise ConfigError(f"{where}.arch: depths and channels need the same length")
    if bb.get("gap_before_final_norm", True):
        raise ConfigError(f"{where}.gap_before_final_norm=True (pooled vectors) cannot feed a segmentation head")
    return {"depths": depths, "channels": channels, "in_channels": int(bb.get("in_channels", 3)),
            "stem_patch_size": int(bb.get("stem_patch_size", 4)),
            "ln_eps": _ln_eps(bb, where, 1e-6, ("LN2d",)), "act": _act(bb, where),
            "linear_pw_conv": bool(bb.get("linear_pw_conv", True)), "use_grn": bool(bb.get("use_grn", False)),
            "layer_scale_init_value": float(bb.get("layer_scale_init_value", 1e-6)),
            "out_indices": _stage_indices(bb.get("out_indices", -1), 4, "out_indices", where)}


def poolformer_kwargs(bb: dict, where: str) -> dict:
    arch = bb.get("arch", "s12")
    if isinstance(arch, dict):
        if "layers" not in arch or "embed_dims" not in arch:
            raise ConfigError(f"{where}.arch dict needs `layers` and `embed_dims`")
        layers, dims = _ints(arch, "layers", (), where + ".arch"), _ints(arch, "embed_dims", (), where + ".arch")
        ratios = _tup(arch.get("mlp_ratios", (4, 4, 4, 4)))
        scale = float(arch.get("layer_scale_init_value", 1e-5))
    elif arch in _POOLFORMER_ARCHS:
        layers, dims, scale = _POOLFORMER_ARCHS[arch]
        ratios = (4, 4, 4, 4)
    else:
        raise ConfigError(f"{where}.arch {arch!r} is not one of {sorted(_POOLFORMER_ARCHS)}")
    if not len(layers) == len(dims) == len(ratios) == 4:
        raise ConfigError(f"{where}.arch needs four stages")
    norm = bb.get("norm_cfg") or {"type": "GN", "num_groups": 1}
    if norm.get("type") != "GN" or "num_groups" not in norm:
        raise ConfigError(f"{where}.norm_cfg: only GN with num_groups is supported, got {norm!r}")
    kw = {"layers": layers, "embed_dims": dims, "mlp_ratios": ratios, "layer_scale_init_value": scale,
          "norm": {"type": "GN", "num_groups": int(norm["num_groups"]), "eps": float(norm.get("eps", 1e-5))},
          "act": _act(bb, where), "out_indices": _stage_indices(bb.get("out_indices", -1), 7, "out_indices", where)}
    for key, default in (("pool_size", 3), ("in_patch_size", 7), ("in_stride", 4), ("in_pad", 2),
                         ("down_patch_size", 3), ("down_stride", 2), ("down_pad", 1)):
        kw[key] = int(bb.get(key, default))
    return kw


def mscan_kwargs(bb: dict, where: str) -> dict:
    norm = bb.get("norm_cfg") or {"type": "SyncBN"}
    if norm.get("type") not in ("BN", "SyncBN"):
        raise ConfigError(f"{where}.norm_cfg: only BatchNorm is supported, got {norm!r}")
    kw = {"in_channels": int(bb.get("in_channels", 3)), "num_stages": int(bb.get("num_stages", 4)),
          "norm": {"type": "BN", **({"eps": float(norm["eps"])} if "eps" in norm else {})}, "act": _act(bb, where)}
    for key, default in (("embed_dims", (64, 128, 256, 512)), ("depths", (3, 4, 6, 3))):
        kw[key] = _ints(bb, key, default, where)
    kw["mlp_ratios"] = _tup(bb.get("mlp_ratios", (4, 4, 4, 4)))
    if any(len(kw[k]) < kw["num_stages"] for k in ("embed_dims", "depths", "mlp_ratios")) or kw["num_stages"] < 1:
        raise ConfigError(f"{where}: embed_dims, depths and mlp_ratios need num_stages entries")
    sizes = _tup(bb.get("attention_kernel_sizes", (5, (1, 7), (1, 11), (1, 21))))
    pads = _tup(bb.get("attention_kernel_paddings", (2, (0, 3), (0, 5), (0, 10))))
    if not (isinstance(sizes, tuple) and isinstance(pads, tuple) and len(sizes) == len(pads) >= 1
            and all(isinstance(v, tuple) and len(v) == 2 for v in sizes[1:] + pads[1:])):
        raise ConfigError(f"{where}: attention_kernel_sizes/paddings must be a square kernel then (h, w) strips")
    kw["attention_kernel_sizes"], kw["attention_kernel_paddings"] = sizes, pads
    return kw


def multiple_of(cfg: dict, pipeline: list, mode: str) -> Optional[tuple]:
    """('pad', d) for the data preprocessor's test_cfg.size_divisor, ('resize', d) for a test
    pipeline `ResizeToMultiple`, else None."""
    model = cfg.get("model") or {}
    pre = model.get("data_preprocessor") or cfg.get("data_preprocessor") or {}
    pad = ((pre.get("test_cfg") or {}) if isinstance(pre, dict) else {}).get("size_divisor")
    steps = [s for s in pipeline if isinstance(s, dict) and s.get("type") == "ResizeToMultiple"]
    if len(steps) > 1 or (steps and pad):
        raise ConfigError("the test pipeline's ResizeToMultiple with another size divisor is not supported")
    if steps and steps[0].get("interpolation") not in (None, "bilinear"):
        raise ConfigError("test pipeline ResizeToMultiple: only bilinear interpolation is supported")
    how, divisor = ("resize", steps[0].get("size_divisor", 32)) if steps else ("pad", pad)
    if not divisor:
        return None
    if not isinstance(divisor, int) or divisor < 1:
        raise ConfigError(f"size divisor {divisor!r} must be a positive int")
    if mode != "whole":
        raise ConfigError("a size divisor with sliding-window inference (test_cfg.mode='slide') is not supported")
    return (how, divisor) if divisor > 1 else None
