"""Config -> keyword arguments for mmseg's real-time families and ResNeSt (the config edge of
vdeploy.models.mmseg's resnest, mobilenet_v3, stdc, pidnet, ddrnet, cgnet, erfnet, fastscnn and
realtime_heads). Registered in build.py's tables through BACKBONE_ARGS and HEAD_ARGS.

Settings mmseg itself ignores (ERFNet's norm_cfg, the STDC context path's act) are ignored here
too; settings that would change the network and that these modules do not implement are refused
with a ConfigError naming the key.
"""
from __future__ import annotations

from ...errors import ConfigError


def _b():
    # build.py imports this module for its tables: import it back lazily
    from . import build

    return build


def _refuse(bb: dict, where: str, *keys: str) -> None:
    for key in keys:
        if bb.get(key):
            raise ConfigError(f"{where}.{key} is not supported")


def _bn(bb: dict, where: str, default=None) -> dict:
    norm = _b().norm_spec(bb, where, default or {"type": "BN"})
    if norm is None or norm["type"] != "BN":
        raise ConfigError(f"{where}.norm_cfg: only BatchNorm is supported here")
    return norm


def _relu(bb: dict, where: str) -> dict:
    act = _b().act_spec(bb, where, {"type": "ReLU"})
    if act is None or act["type"] != "ReLU":
        raise ConfigError(f"{where}.act_cfg: only ReLU is supported here")
    return act


def resnest(bb: dict, where: str) -> dict:
    # a ResNetV1d (deep stem, average-pool shortcuts) with split-attention bottlenecks
    from .backbone_args import _resnet  # imports this module for its tables: imported back lazily

    kw = _resnet(dict(bb, type="ResNetV1d"), where)
    if kw["depth"] < 50:
        raise ConfigError(f"{where}.depth must be 50, 101 or 152 for ResNeSt")
    return dict(kw, **_b()._pick(bb, {"groups": 1, "base_width": 4, "radix": 2, "reduction_factor": 4,
                                      "avg_down_stride": True}))


def mobilenet_v3(bb: dict, where: str) -> dict:
    _refuse(bb, where, "conv_cfg")
    kw = _b()._pick(bb, {"arch": "small", "out_indices": (0, 1, 12), "reduction_factor": 1})
    if kw["arch"] not in ("small", "large"):
        raise ConfigError(f"{where}.arch must be 'small' or 'large'")
    last = 12 if kw["arch"] == "small" else 16
    if not kw["out_indices"] or any(i not in range(last + 1) for i in kw["out_indices"]):
        raise ConfigError(f"{where}.out_indices must be among 0..{last}")
    if not isinstance(kw["reduction_factor"], int) or kw["reduction_factor"] < 1:
        raise ConfigError(f"{where}.reduction_factor must be a positive int")
    return dict(kw, norm=_bn(bb, where))


def stdc_net(bb: dict, where: str) -> dict:
    _refuse(bb, where, "conv_cfg")
    if bb.get("bottleneck_type", "cat") != "cat":
        raise ConfigError(f"{where}.bottleneck_type {bb.get('bottleneck_type')!r} is not supported (only 'cat')")
    for key in ("stdc_type", "channels"):
        if key not in bb:
            raise ConfigError(f"{where} needs `{key}`")
    kw = _b()._pick(bb, {"stdc_type": None, "in_channels": 3, "channels": None, "num_convs": 4,
                         "with_final_conv": False})
    if kw["stdc_type"] not in ("STDCNet1", "STDCNet2"):
        raise ConfigError(f"{where}.stdc_type must be 'STDCNet1' or 'STDCNet2'")
    if len(kw["channels"]) != 5 or kw["num_convs"] < 2:
        raise ConfigError(f"{where}: channels needs 5 entries and num_convs at least 2")
    return dict(kw, norm=_bn(bb, where), act=_relu(bb, where))


def stdc_context_path(bb: dict, where: str) -> dict:
    if not isinstance(bb.get("backbone_cfg"), dict) or bb["backbone_cfg"].get("type") != "STDCNet":
        raise ConfigError(f"{where} needs a `backbone_cfg` dict of type 'STDCNet'")
    inner = _b().backbone_kwargs(bb["backbone_cfg"], f"{where}.backbone_cfg")
    kw = _b()._pick(bb, {"last_in_channels": (1024, 512), "out_channels": 128, "upsample_mode": "nearest",
                         "align_corners": None})
    ffm = dict(bb.get("ffm_cfg") or {"in_channels": 512, "out_channels": 256, "scale_factor": 4})
    if set(ffm) - {"in_channels", "out_channels", "scale_factor"} or not {"in_channels", "out_channels"} <= set(ffm):
        raise ConfigError(f"{where}.ffm_cfg {ffm!r} is not supported (in_channels, out_channels, scale_factor)")
    if len(kw["last_in_channels"]) != 2 or kw["upsample_mode"] not in ("nearest", "bilinear"):
        raise ConfigError(f"{where}: last_in_channels needs 2 entries, upsample_mode 'nearest' or 'bilinear'")
    return dict(kw, backbone=inner, ffm=ffm, norm=_bn(bb, where))


def _two_branch(bb: dict, where: str, defaults: dict) -> dict:
    _refuse(bb, where, "conv_cfg")
    return dict(_b()._pick(bb, defaults), norm=_bn(bb, where), act=_relu(bb, where))


def pidnet(bb: dict, where: str) -> dict:
    kw = _two_branch(bb, where, {"in_channels": 3, "channels": 64, "ppm_channels": 96, "num_stem_blocks": 2,
                                 "num_branch_blocks": 3, "align_corners": False})
    if kw["num_stem_blocks"] < 1 or kw["num_branch_blocks"] < 1:
        raise ConfigError(f"{where}: num_stem_blocks and num_branch_blocks must be positive")
    return kw


def ddrnet(bb: dict, where: str) -> dict:
    return _two_branch(bb, where, {"in_channels": 3, "channels": 32, "ppm_channels": 128, "align_corners": False})


def cgnet(bb: dict, where: str) -> dict:
    _refuse(bb, where, "conv_cfg")
    if (bb.get("act_cfg") or {"type": "PReLU"}).get("type") != "PReLU":
        raise ConfigError(f"{where}.act_cfg: only PReLU is supported")
    kw = _b()._pick(bb, {"in_channels": 3, "num_channels": (32, 64, 128), "num_blocks": (3, 21),
                         "dilations": (2, 4), "reductions": (8, 16)})
    if len(kw["num_channels"]) != 3 or any(len(kw[k]) != 2 for k in ("num_blocks", "dilations", "reductions")):
        raise ConfigError(f"{where}: num_channels needs 3 entries, num_blocks/dilations/reductions 2")
    return dict(kw, norm=_bn(bb, where))


def erfnet(bb: dict, where: str) -> dict:
    _refuse(bb, where, "conv_cfg")
    kw = _b()._pick(bb, {"in_channels": 3, "enc_downsample_channels": (16, 64, 128),
                         "enc_stage_non_bottlenecks": (5, 8), "enc_non_bottleneck_dilations": (2, 4, 8, 16),
                         "enc_non_bottleneck_channels": (64, 128), "dec_upsample_channels": (64, 16),
                         "dec_stages_non_bottleneck": (2, 2), "dec_non_bottleneck_channels": (64, 16)})
    n = len(kw["enc_downsample_channels"])
    if n < 2 or len(kw["enc_stage_non_bottlenecks"]) != n - 1 or not kw["enc_non_bottleneck_dilations"]:
        raise ConfigError(f"{where}: enc_stage_non_bottlenecks needs one entry per down-sampler after the first")
    if not (len(kw["dec_upsample_channels"]) <= len(kw["dec_non_bottleneck_channels"])
            and len(kw["dec_upsample_channels"]) <= len(kw["dec_stages_non_bottleneck"])):
        raise ConfigError(f"{where}: dec_* lists need an entry per up-sampler")
    return kw


def fastscnn(bb: dict, where: str) -> dict:
    _refuse(bb, where, "conv_cfg")
    kw = _b()._pick(bb, {"in_channels": 3, "downsample_dw_channels": (32, 48), "global_in_channels": 64,
                         "global_block_channels": (64, 96, 128), "global_block_strides": (2, 2, 1),
                         "global_out_channels": 128, "higher_in_channels": 64, "lower_in_channels": 128,
                         "fusion_out_channels": 128, "out_indices": (0, 1, 2), "align_corners": False})
    if any(i not in range(3) for i in kw["out_indices"]):
        raise ConfigError(f"{where}.out_indices must be among 0, 1, 2")
    return dict(kw, norm=_bn(bb, where), act=_relu(bb, where), dw_act=_b().act_spec(bb, where, key="dw_act_cfg"))


BACKBONE_ARGS = {"ResNeSt": resnest, "MobileNetV3": mobilenet_v3, "STDCNet": stdc_net,
                 "STDCContextPathNet": stdc_context_path, "PIDNet": pidnet, "DDRNet": ddrnet, "CGNet": cgnet,
                 "ERFNet": erfnet, "FastSCNN": fastscnn}

# Per head: the extra keyword arguments it takes, with mmseg's defaults (see build._HEAD_ARGS).
HEAD_ARGS = {"LRASPPHead": {"branch_channels": (32, 64)}, "PIDHead": {}, "DDRHead": {},
             "DepthwiseSeparableFCNHead": {"num_convs": 2, "kernel_size": 3, "concat_input": True,
                                           "dw_act_cfg": None}}

# PointHead: mmseg fixes input_transform='multiple_select'; the subdivision comes from test_cfg
HEAD_ARGS["PointHead"] = {"num_fcs": 3, "coarse_pred_each_layer": True}


def point_head_test_cfg(head: dict, test_cfg: dict, last: bool) -> dict:
    """A PointHead's kwargs with the subdivision settings of `model.test_cfg` (other heads as given)."""
    if head["type"] != "PointHead":
        return head
    if not last:
        raise ConfigError("model.decode_head: a PointHead must be the last head of the cascade")
    kw = _b()._pick(test_cfg, {"subdivision_steps": 2, "subdivision_num_points": 8196, "scale_factor": 2})
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in kw.values()):
        raise ConfigError("model.test_cfg: subdivision_steps, subdivision_num_points and scale_factor must be "
                          "positive ints")
    return dict(head, **kw)
