"""Config -> keyword arguments for mmseg's plain-ViT family: the VisionTransformer, BEiT and MAE
backbones and the MultiLevelNeck, MLANeck and Feature2Pyramid necks (their heads are plain
`_HEAD_ARGS` entries in build.py). Training-only keys (drop rates, with_cp, norm_eval,
frozen_exclude, init_cfg) change nothing at inference and are ignored."""
from __future__ import annotations

from ...errors import ConfigError


def _build():
    # build.py imports this module for its tables, so its helpers are looked up at call time
    from . import build

    return build


def _ln(part: dict, where: str, default: dict, key: str = "norm_cfg") -> dict:
    norm = _build().norm_spec(part, where, default, key)
    if norm is None or norm["type"] != "LN":
        raise ConfigError(f"{where}.{key} must be LN")
    return {"type": "LN", "eps": norm.get("eps", 1e-5)}


def _img_size(part: dict, where: str):
    size = part.get("img_size", 224)
    if isinstance(size, (list, tuple)) and len(size) == 1:
        size = size[0]
    return _build()._pair(size, f"{where}.img_size")


def _out_indices(part: dict, where: str):
    value = part.get("out_indices", -1)
    layers = int(part.get("num_layers", 12))
    indices = [layers - 1 if value == -1 else value] if isinstance(value, int) else list(value)
    if not indices or any(not isinstance(i, int) or not 0 <= i < layers for i in indices):
        raise ConfigError(f"{where}.out_indices {value!r} must name layers among 0..{layers - 1}")
    return tuple(indices)


def _transformer(bb: dict, where: str) -> dict:
    if bb.get("num_fcs", 2) != 2:
        raise ConfigError(f"{where}.num_fcs must be 2")
    kw = _build()._pick(bb, {"patch_size": 16, "in_channels": 3, "embed_dims": 768, "num_layers": 12,
                             "num_heads": 12, "mlp_ratio": 4, "patch_norm": False, "final_norm": False})
    if kw["embed_dims"] % kw["num_heads"]:
        raise ConfigError(f"{where}: embed_dims must be a multiple of num_heads")
    return dict(kw, img_size=_img_size(bb, where), out_indices=_out_indices(bb, where),
                norm=_ln(bb, where, {"type": "LN"}), act=_build().act_spec(bb, where, {"type": "GELU"}))


def vision_transformer(bb: dict, where: str) -> dict:
    kw = _transformer(bb, where)
    extra = _build()._pick(bb, {"patch_pad": "corner", "out_origin": False, "qkv_bias": True, "with_cls_token": True,
                                "output_cls_token": False, "patch_bias": False, "pre_norm": False,
                                "interpolate_mode": "bicubic"})
    if extra["patch_pad"] not in ("corner", 0):
        raise ConfigError(f"{where}.patch_pad {extra['patch_pad']!r} is not supported ('corner' or 0)")
    if extra["interpolate_mode"] not in ("bicubic", "bilinear"):
        raise ConfigError(f"{where}.interpolate_mode {extra['interpolate_mode']!r} is not 'bicubic' or 'bilinear'")
    if extra["output_cls_token"] and not extra["with_cls_token"]:
        raise ConfigError(f"{where}.output_cls_token needs with_cls_token")
    return dict(kw, **extra)


def beit(bb: dict, where: str) -> dict:
    return dict(_transformer(bb, where), qv_bias=bool(bb.get("qv_bias", True)),
                init_values=float(bb.get("init_values", 0.1)))


def mae(bb: dict, where: str) -> dict:
    return dict(_transformer(bb, where), init_values=float(bb.get("init_values", 0.1)))


def _needs(part: dict, where: str, *keys):
    for key in keys:
        if key not in part:
            raise ConfigError(f"{where} needs `{key}`")


def multilevel_neck(neck: dict, where: str) -> dict:
    _needs(neck, where, "in_channels", "out_channels")
    b = _build()
    kw = b._pick(neck, {"in_channels": None, "out_channels": None, "scales": (0.5, 1, 2, 4)})
    if len(kw["in_channels"]) not in (1, len(kw["scales"])):
        raise ConfigError(f"{where}.in_channels needs one entry or one per scale")
    return dict(kw, norm=b.norm_spec(neck, where), act=b.act_spec(neck, where))


def mla_neck(neck: dict, where: str) -> dict:
    _needs(neck, where, "in_channels", "out_channels")
    b = _build()
    kw = b._pick(neck, {"in_channels": None, "out_channels": None})
    return dict(kw, norm_layer=_ln(neck, where, {"type": "LN", "eps": 1e-6}, "norm_layer"),
                norm=b.norm_spec(neck, where), act=b.act_spec(neck, where))


def feature2pyramid(neck: dict, where: str) -> dict:
    _needs(neck, where, "embed_dim")
    kw = _build()._pick(neck, {"embed_dim": None, "rescales": (4, 2, 1, 0.5)})
    if kw["rescales"] not in ((4, 2, 1, 0.5), (2, 1, 0.5, 0.25)):
        raise ConfigError(f"{where}.rescales {kw['rescales']} must be (4, 2, 1, 0.5) or (2, 1, 0.5, 0.25)")
    return dict(kw, norm=_build().norm_spec(neck, where, {"type": "BN"}))
