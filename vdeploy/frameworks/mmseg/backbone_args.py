"""Config -> keyword arguments of the mmseg backbones (`backbone_kwargs`), one reader per type;
the families added later keep theirs in families_a_args, families_b_args and vit_args."""
from __future__ import annotations

from ...errors import ConfigError
from . import families_a_args as fa_args
from . import families_b_args as fb_args
from . import vit_args
from .args_common import _pick, _tup, act_spec, norm_spec

_RESNETS = {"ResNet": (False, False), "ResNetV1c": (True, False), "ResNetV1d": (True, True)}  # deep_stem, avg_down


def _resnet(bb: dict, where: str) -> dict:
    if (norm_spec(bb, where, {"type": "BN"}) or {}).get("type") != "BN":
        raise ConfigError(f"{where}.norm_cfg: only BatchNorm ResNets are supported")
    if (bb.get("act_cfg") or {"type": "ReLU"}).get("type") != "ReLU":
        raise ConfigError(f"{where}.act_cfg: only ReLU ResNets are supported")
    for key in ("dcn", "plugins"):
        if bb.get(key):
            raise ConfigError(f"{where}.{key} is not supported")
    if bb.get("num_stages", 4) != 4:
        raise ConfigError(f"{where}.num_stages must be 4")
    deep_stem, avg_down = _RESNETS[bb["type"]]
    return {"depth": int(bb.get("depth", 50)), "stem_channels": int(bb.get("stem_channels", 64)),
            "base_channels": int(bb.get("base_channels", 64)),
            "strides": tuple(bb.get("strides", (1, 2, 2, 2))), "dilations": tuple(bb.get("dilations", (1, 1, 1, 1))),
            "out_indices": tuple(bb.get("out_indices", (0, 1, 2, 3))),
            "deep_stem": bool(bb.get("deep_stem", deep_stem)), "avg_down": bool(bb.get("avg_down", avg_down)),
            "contract_dilation": bool(bb.get("contract_dilation", False)), "style": bb.get("style", "pytorch"),
            "multi_grid": _tup(bb.get("multi_grid"))}


def _mit(bb: dict, where: str) -> dict:
    norm = norm_spec(bb, where, {"type": "LN", "eps": 1e-6})
    if norm is None or norm["type"] != "LN":
        raise ConfigError(f"{where}.norm_cfg must be LN")
    kw = _pick(bb, {"in_channels": 3, "embed_dims": 64, "num_layers": (3, 4, 6, 3), "num_heads": (1, 2, 4, 8),
                    "patch_sizes": (7, 3, 3, 3), "strides": (4, 2, 2, 2), "sr_ratios": (8, 4, 2, 1),
                    "out_indices": (0, 1, 2, 3), "mlp_ratio": 4, "qkv_bias": True})
    if bb.get("num_stages", len(kw["num_layers"])) != len(kw["num_layers"]):
        raise ConfigError(f"{where}.num_stages must equal len(num_layers)")
    return dict(kw, act=act_spec(bb, where, {"type": "GELU"}), ln_eps=norm.get("eps", 1e-5))


def _swin(bb: dict, where: str) -> dict:
    norm = norm_spec(bb, where, {"type": "LN"})
    if norm is None or norm["type"] != "LN":
        raise ConfigError(f"{where}.norm_cfg must be LN")
    if bb.get("use_abs_pos_embed"):
        raise ConfigError(f"{where}.use_abs_pos_embed is not supported")
    kw = _pick(bb, {"in_channels": 3, "embed_dims": 96, "patch_size": 4, "window_size": 7, "mlp_ratio": 4,
                    "depths": (2, 2, 6, 2), "num_heads": (3, 6, 12, 24), "strides": (4, 2, 2, 2),
                    "out_indices": (0, 1, 2, 3), "qkv_bias": True, "qk_scale": None, "patch_norm": True})
    return dict(kw, act=act_spec(bb, where, {"type": "GELU"}), ln_eps=norm.get("eps", 1e-5))


def _hrnet(bb: dict, where: str) -> dict:
    norm = norm_spec(bb, where, {"type": "BN"})
    if norm is None or norm["type"] != "BN" or norm.get("eps", 1e-5) != 1e-5:
        raise ConfigError(f"{where}.norm_cfg: only BatchNorm (default eps) HRNets are supported")
    extra = bb.get("extra")
    if not isinstance(extra, dict) or any(not isinstance(extra.get(f"stage{i}"), dict) for i in range(1, 5)):
        raise ConfigError(f"{where}.extra needs dicts stage1 .. stage4")
    stages = []
    for i in range(1, 5):
        st = extra[f"stage{i}"]
        for key in ("num_modules", "num_branches", "block", "num_blocks", "num_channels"):
            if key not in st:
                raise ConfigError(f"{where}.extra.stage{i} needs `{key}`")
        if st["block"] not in ("BASIC", "BOTTLENECK"):
            raise ConfigError(f"{where}.extra.stage{i}.block {st['block']!r} is not 'BASIC' or 'BOTTLENECK'")
        if not len(st["num_blocks"]) == len(st["num_channels"]) == st["num_branches"]:
            raise ConfigError(f"{where}.extra.stage{i}: num_blocks and num_channels need num_branches entries")
        stages.append({k: _tup(st[k]) for k in ("num_modules", "num_branches", "block", "num_blocks",
                                                 "num_channels")})
    if stages[0]["num_branches"] != 1:
        raise ConfigError(f"{where}.extra.stage1 must have one branch")
    for key in ("dcn", "plugins", "conv_cfg"):
        if bb.get(key):
            raise ConfigError(f"{where}.{key} is not supported")
    return {"stages": tuple(stages), "in_channels": int(bb.get("in_channels", 3)),
            "multiscale_output": bool(bb.get("multiscale_output", True))}


def _unet(bb: dict, where: str) -> dict:
    norm = norm_spec(bb, where, {"type": "BN"})
    for key in ("dcn", "plugins", "conv_cfg"):
        if bb.get(key):
            raise ConfigError(f"{where}.{key} is not supported")
    up = dict(bb.get("upsample_cfg") or {"type": "InterpConv"})
    allowed = {"InterpConv": {"type", "conv_first", "kernel_size", "stride", "padding", "upsample_cfg"},
               "DeconvModule": {"type", "kernel_size", "scale_factor"}}
    if up.get("type") not in allowed or set(up) - allowed[up["type"]]:
        raise ConfigError(f"{where}.upsample_cfg {up!r} is not supported (InterpConv or DeconvModule)")
    if "upsample_cfg" in up:
        inner = dict(up.pop("upsample_cfg"))
        if set(inner) - {"scale_factor", "mode", "align_corners"}:
            raise ConfigError(f"{where}.upsample_cfg.upsample_cfg {inner!r} is not supported")
        up["upsample"] = inner
    n = int(bb.get("num_stages", 5))
    kw = _pick(bb, {"in_channels": 3, "base_channels": 64, "strides": (1,) * 5, "enc_num_convs": (2,) * 5,
                    "dec_num_convs": (2,) * 4, "downsamples": (True,) * 4, "enc_dilations": (1,) * 5,
                    "dec_dilations": (1,) * 4})
    if not (len(kw["strides"]) == len(kw["enc_num_convs"]) == len(kw["enc_dilations"]) == n
            and len(kw["dec_num_convs"]) == len(kw["downsamples"]) == len(kw["dec_dilations"]) == n - 1):
        raise ConfigError(f"{where}: strides/enc_* need num_stages entries, dec_*/downsamples num_stages - 1")
    return dict(kw, num_stages=n, norm=norm, act=act_spec(bb, where, {"type": "ReLU"}), upsample=up)


def _bisenetv2(bb: dict, where: str) -> dict:
    # mmseg never passes the backbone's norm_cfg/act_cfg on to its branches (they keep BN/ReLU),
    # so those keys change nothing there and are ignored here too.
    if bb.get("conv_cfg"):
        raise ConfigError(f"{where}.conv_cfg is not supported")
    kw = _pick(bb, {"in_channels": 3, "detail_channels": (64, 64, 128), "semantic_channels": (16, 32, 64, 128),
                    "semantic_expansion_ratio": 6, "bga_channels": 128, "out_indices": (0, 1, 2, 3, 4),
                    "align_corners": False})
    if len(kw["detail_channels"]) < 1 or len(kw["semantic_channels"]) < 2:
        raise ConfigError(f"{where}: detail_channels and semantic_channels are too short")
    if max(kw["out_indices"]) >= len(kw["semantic_channels"]) + 1:
        raise ConfigError(f"{where}.out_indices {kw['out_indices']} out of range")
    return kw


def _mobilenet_v2(bb: dict, where: str) -> dict:
    for key in ("conv_cfg",):
        if bb.get(key):
            raise ConfigError(f"{where}.{key} is not supported")
    kw = _pick(bb, {"widen_factor": 1.0, "strides": (1, 2, 2, 2, 1, 2, 1), "dilations": (1,) * 7,
                    "out_indices": (1, 2, 4, 6)})
    if len(kw["strides"]) != 7 or len(kw["dilations"]) != 7 or any(s not in (1, 2) for s in kw["strides"]):
        raise ConfigError(f"{where}: strides (1 or 2) and dilations need 7 entries")
    if len(kw["out_indices"]) < 2 or any(i not in range(7) for i in kw["out_indices"]):
        # mmseg returns a bare tensor for one index, which its heads then index by batch
        raise ConfigError(f"{where}.out_indices must list at least two of 0..6")
    return dict(kw, norm=norm_spec(bb, where, {"type": "BN"}), act=act_spec(bb, where, {"type": "ReLU6"}))


def _bisenetv1(bb: dict, where: str) -> dict:
    # As in BiSeNetV2, mmseg's sub-modules keep their BN/ReLU defaults whatever norm_cfg says.
    if not isinstance(bb.get("backbone_cfg"), dict):
        raise ConfigError(f"{where} needs a `backbone_cfg` dict")
    inner = backbone_kwargs(bb["backbone_cfg"], f"{where}.backbone_cfg")
    if inner["type"] not in _RESNETS or len(inner["out_indices"]) != 4:
        raise ConfigError(f"{where}.backbone_cfg must be a ResNet with four outputs")
    kw = _pick(bb, {"in_channels": 3, "spatial_channels": (64, 64, 64, 128), "context_channels": (128, 256, 512),
                    "out_indices": (0, 1, 2), "out_channels": 256})
    if len(kw["spatial_channels"]) != 4 or len(kw["context_channels"]) != 3:
        raise ConfigError(f"{where}: spatial_channels needs 4 entries, context_channels 3")
    if kw["spatial_channels"][-1] + kw["context_channels"][0] != kw["context_channels"][1]:
        raise ConfigError(f"{where}: spatial_channels[-1] + context_channels[0] must equal context_channels[1]")
    if any(i not in range(3) for i in kw["out_indices"]):
        raise ConfigError(f"{where}.out_indices must be among 0, 1, 2")
    return dict(kw, backbone=inner)


def _icnet(bb: dict, where: str) -> dict:
    if not isinstance(bb.get("backbone_cfg"), dict):
        raise ConfigError(f"{where} needs a `backbone_cfg` dict")
    inner = backbone_kwargs(bb["backbone_cfg"], f"{where}.backbone_cfg")
    if inner["type"] not in _RESNETS or not inner["deep_stem"]:
        raise ConfigError(f"{where}.backbone_cfg must be a ResNet with a deep stem (ResNetV1c)")
    if bb.get("conv_cfg"):
        raise ConfigError(f"{where}.conv_cfg is not supported")
    kw = _pick(bb, {"in_channels": 3, "layer_channels": (512, 2048), "light_branch_middle_channels": 32,
                    "psp_out_channels": 512, "out_channels": (64, 256, 256), "pool_scales": (1, 2, 3, 6),
                    "align_corners": False})
    if len(kw["layer_channels"]) != 2 or len(kw["out_channels"]) != 3:
        raise ConfigError(f"{where}: layer_channels needs 2 entries, out_channels 3")
    return dict(kw, backbone=inner, norm=norm_spec(bb, where, {"type": "BN"}),
                act=act_spec(bb, where, {"type": "ReLU"}))


_BACKBONE_ARGS = {"ResNet": _resnet, "ResNetV1c": _resnet, "ResNetV1d": _resnet, "HRNet": _hrnet,
                  "MobileNetV2": _mobilenet_v2, "UNet": _unet, "BiSeNetV1": _bisenetv1, "BiSeNetV2": _bisenetv2,
                  "ICNet": _icnet, "MixVisionTransformer": _mit, "SwinTransformer": _swin}
_BACKBONE_ARGS.update({"PCPVT": fa_args.twins_kwargs, "SVT": fa_args.twins_kwargs, "MSCAN": fa_args.mscan_kwargs,
                       "mmpretrain.ConvNeXt": fa_args.convnext_kwargs, "mmpretrain.PoolFormer": fa_args.poolformer_kwargs})
_BACKBONE_ARGS.update(VisionTransformer=vit_args.vision_transformer, BEiT=vit_args.beit, MAE=vit_args.mae)
_BACKBONE_ARGS.update(fb_args.BACKBONE_ARGS)  # ResNeSt and the real-time nets


def backbone_kwargs(bb: dict, where: str = "model.backbone") -> dict:
    kind = bb.get("type")
    if kind not in _BACKBONE_ARGS:
        raise ConfigError(f"{where} type {kind!r} is not supported; expected one of {sorted(_BACKBONE_ARGS)}")
    return dict(_BACKBONE_ARGS[kind](bb, where), type=kind)
