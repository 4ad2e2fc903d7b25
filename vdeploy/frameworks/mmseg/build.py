"""MMSegmentation config + checkpoint -> a semantic-segmentation DeployableModel (no mmseg).

What runs where (the label map must equal mmseg's `inference_model` at the original size):
- host: the test pipeline's `Resize` (mmcv `imrescale`/`imresize` with OpenCV on the uint8
  image), then, after the graph, the bilinear resize of the logits to the original image
  (`align_corners` of the decode head) and the argmax (mmseg's `postprocess_result`);
- graph: normalisation, backbone, decode head, the head's resize to the input size, and for
  `test_cfg.mode='slide'` the sliding windows (see vdeploy.models.mmseg.segmentor).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ...errors import CheckpointError, ConfigError

_NORMS = ("BN", "SyncBN", "BN2d", "GN", "LN")
_ACTS = ("ReLU", "ReLU6", "GELU", "HSwish", "HSigmoid", "Sigmoid", "LeakyReLU", "PReLU", "Swish")
_INTERP = {("cv2", "bilinear"): "cv2_linear", ("cv2", "nearest"): "cv2_nearest", ("cv2", "bicubic"): "cv2_cubic",
           ("cv2", "area"): "cv2_area", ("pillow", "bilinear"): "pil_bilinear"}


def _section(cfg: dict, key: str, where: str) -> dict:
    value = cfg.get(key)
    if not isinstance(value, dict):
        raise ConfigError(f"config has no `{where}{key}` dict")
    return value


def norm_spec(part: dict, where: str, default: Optional[dict] = None, key: str = "norm_cfg") -> Optional[dict]:
    """A config's norm_cfg as the models' norm dict ({"type": "BN", "eps": ...}) or None."""
    cfg = part.get(key, default)
    if cfg is None:
        return None
    kind = cfg.get("type")
    if kind not in _NORMS:
        raise ConfigError(f"{where}.{key} type {kind!r} is not supported; expected one of {_NORMS}")
    out: dict[str, Any] = {"type": "BN" if kind in ("SyncBN", "BN2d") else kind}
    for k in ("eps", "num_groups", "momentum"):
        if k in cfg:
            out[k] = cfg[k]
    if kind == "GN" and "num_groups" not in cfg:
        raise ConfigError(f"{where}.{key}: GN needs num_groups")
    return out


def act_spec(part: dict, where: str, default: Optional[dict] = None, key: str = "act_cfg") -> Optional[dict]:
    cfg = part.get(key, default)
    if cfg is None:
        return None
    kind = cfg.get("type")
    if kind not in _ACTS:
        raise ConfigError(f"{where}.{key} type {kind!r} is not supported; expected one of {_ACTS}")
    return {k: v for k, v in cfg.items() if k != "inplace"}


def _tup(v):
    return tuple(_tup(x) for x in v) if isinstance(v, (list, tuple)) else v


def _pick(part: dict, defaults: dict) -> dict:
    """The keys of `defaults` from a config part (lists as tuples)."""
    return {k: _tup(part.get(k, d)) for k, d in defaults.items()}


# --------------------------------------------------------------------------- backbones

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


_BACKBONE_ARGS = {"ResNet": _resnet, "HRNet": _hrnet, "ResNetV1c": _resnet, "ResNetV1d": _resnet,
                  "MixVisionTransformer": _mit, "SwinTransformer": _swin}


def backbone_kwargs(bb: dict, where: str = "model.backbone") -> dict:
    kind = bb.get("type")
    if kind not in _BACKBONE_ARGS:
        raise ConfigError(f"{where} type {kind!r} is not supported; expected one of {sorted(_BACKBONE_ARGS)}")
    return dict(_BACKBONE_ARGS[kind](bb, where), type=kind)


# --------------------------------------------------------------------------- decode heads

# Per head: the extra keyword arguments it takes, with mmseg's defaults (None: required).
_REQUIRED = object()
_HEAD_ARGS: dict[str, dict] = {
    "FCNHead": {"num_convs": 2, "kernel_size": 3, "dilation": 1, "concat_input": True},
    "PSPHead": {"pool_scales": (1, 2, 3, 6)},
    "ASPPHead": {"dilations": (1, 6, 12, 18)},
    "DepthwiseSeparableASPPHead": {"dilations": (1, 6, 12, 18), "c1_in_channels": _REQUIRED,
                                   "c1_channels": _REQUIRED},
    "UPerHead": {"pool_scales": (1, 2, 3, 6)},
    "FPNHead": {"feature_strides": _REQUIRED},
    "SegformerHead": {"interpolate_mode": "bilinear"},
    "DAHead": {"pam_channels": _REQUIRED},
    "CCHead": {"recurrence": 2, "kernel_size": 3, "dilation": 1, "concat_input": True},
    "NLHead": {"reduction": 2, "use_scale": True, "mode": "embedded_gaussian", "kernel_size": 3, "dilation": 1,
               "concat_input": True},
    "DNLHead": {"reduction": 2, "use_scale": True, "mode": "embedded_gaussian", "temperature": 0.05,
                "kernel_size": 3, "dilation": 1, "concat_input": True},
    "GCHead": {"ratio": 0.25, "pooling_type": "att", "fusion_types": ("channel_add",), "kernel_size": 3,
               "dilation": 1, "concat_input": True},
    "ANNHead": {"project_channels": _REQUIRED, "query_scales": (1,), "key_pool_scales": (1, 3, 6, 8)},
    "EMAHead": {"ema_channels": _REQUIRED, "num_bases": _REQUIRED, "num_stages": _REQUIRED, "concat_input": True},
    "APCHead": {"pool_scales": (1, 2, 3, 6), "fusion": True},
    "DMHead": {"filter_sizes": (1, 3, 5, 7), "fusion": False},
    "ISAHead": {"isa_channels": _REQUIRED, "down_factor": (8, 8)},
    "PSAHead": {"mask_size": _REQUIRED, "psa_type": "bi-direction", "compact": False, "shrink_factor": 2,
                "normalization_factor": 1.0, "psa_softmax": True},
    "EncHead": {"num_codes": 32, "use_se_loss": True, "add_lateral": False},
    "OCRHead": {"ocr_channels": _REQUIRED, "scale": 1},
}
# Heads that refine the previous head's logits (only after the first head of a cascade).
_CASCADE = ("OCRHead",)
# Heads whose input is always a list of features (mmseg fixes input_transform='multiple_select').
_MULTI = ("UPerHead", "FPNHead", "SegformerHead", "ANNHead", "EncHead")


def head_kwargs(head: dict, where: str = "model.decode_head") -> dict:
    kind = head.get("type")
    if kind not in _HEAD_ARGS:
        raise ConfigError(f"{where} type {kind!r} is not supported; expected one of {sorted(_HEAD_ARGS)}")
    for key in ("in_channels", "channels", "num_classes"):
        if key not in head:
            raise ConfigError(f"{where} needs `{key}`")
    num_classes = int(head["num_classes"])
    out_channels = int(head.get("out_channels") or num_classes)
    if out_channels != num_classes:
        raise ConfigError(f"{where} with out_channels != num_classes (binary sigmoid heads) is not supported")
    transform = "multiple_select" if kind in _MULTI else head.get("input_transform")
    if transform not in (None, "multiple_select", "resize_concat"):
        raise ConfigError(f"{where}.input_transform {transform!r} is not supported")
    in_index = _tup(head.get("in_index", -1))
    in_channels = _tup(head["in_channels"])
    if (transform is None) != isinstance(in_channels, int) or isinstance(in_index, int) != isinstance(in_channels, int):
        raise ConfigError(f"{where}: in_channels and in_index must both be ints (one input) or both lists "
                          f"(input_transform)")
    if not isinstance(in_channels, int) and len(in_channels) != len(in_index):
        raise ConfigError(f"{where}: in_channels and in_index must have the same length")
    extras = {}
    for key, default in _HEAD_ARGS[kind].items():
        if default is _REQUIRED and key not in head:
            raise ConfigError(f"{where} ({kind}) needs `{key}`")
        extras[key] = _tup(head.get(key, default))
    kw: dict[str, Any] = {"type": kind, "in_channels": in_channels, "channels": int(head["channels"]),
                          "num_classes": num_classes, "in_index": in_index,
                          "align_corners": bool(head.get("align_corners", False)),
                          "norm": norm_spec(head, where), "act": act_spec(head, where, {"type": "ReLU"}), **extras}
    if kind not in _MULTI:
        kw["input_transform"] = transform
    return kw


def _pair(value, what: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
        raise ConfigError(f"{what} must be a positive int or a pair of them, got {value!r}")
    return int(value[0]), int(value[1])


def test_pipeline(cfg: dict) -> list:
    loader = cfg.get("test_dataloader") or {}
    pipeline = (loader.get("dataset") or {}).get("pipeline") if isinstance(loader, dict) else None
    if pipeline is None:
        pipeline = cfg.get("test_pipeline")
    if not isinstance(pipeline, list):
        raise ConfigError("config has no test pipeline (test_dataloader.dataset.pipeline or test_pipeline)")
    return pipeline


def resize_policy(pipeline: list) -> dict:
    """The runtime's resize policy equal to the test pipeline's `Resize` (mmcv semantics)."""
    steps = [s for s in pipeline if isinstance(s, dict) and s.get("type") in ("Resize", "RandomResize")]
    if not steps:
        return {"type": "none"}
    if len(steps) > 1 or steps[0]["type"] != "Resize":
        raise ConfigError("the test pipeline must have at most one `Resize` step")
    step = steps[0]
    if step.get("scale") is None:
        raise ConfigError("test pipeline `Resize` without `scale` (scale_factor only) is not supported")
    w, h = _pair(step["scale"], "test pipeline Resize.scale")  # mmcv scales are (w, h)
    interp = _INTERP.get((step.get("backend", "cv2"), step.get("interpolation", "bilinear")))
    if interp is None:
        raise ConfigError(f"test pipeline Resize with backend {step.get('backend')!r} and interpolation "
                          f"{step.get('interpolation')!r} is not supported")
    if step.get("keep_ratio", False):
        # mmcv `rescale_size`: factor = min(long / long side, short / short side), sizes int(x + 0.5);
        # the same arithmetic as the shortest-edge policy with min_size=short, max_size=long.
        return {"type": "shortest_edge", "min_size": min(w, h), "max_size": max(w, h), "interp": interp}
    return {"type": "fixed", "height": h, "width": w, "interp": interp}


def model_kwargs(cfg: dict) -> dict:
    model = _section(cfg, "model", "")
    if model.get("type") not in ("EncoderDecoder", "CascadeEncoderDecoder"):
        raise ConfigError(f"model type {model.get('type')!r} is not supported; "
                          "expected 'EncoderDecoder' or 'CascadeEncoderDecoder'")
    if model.get("neck"):
        raise ConfigError(f"model.neck {model['neck'].get('type')!r} is not supported")
    pre = model.get("data_preprocessor") or cfg.get("data_preprocessor") or {}
    if "mean" not in pre or "std" not in pre:
        raise ConfigError("model.data_preprocessor needs `mean` and `std`")
    test_cfg = model.get("test_cfg") or {}
    mode = test_cfg.get("mode", "whole")
    if mode not in ("whole", "slide"):
        raise ConfigError(f"model.test_cfg.mode {mode!r} is not one of 'whole', 'slide'")
    heads = model.get("decode_head")
    if model["type"] == "CascadeEncoderDecoder":
        if not (isinstance(heads, (list, tuple)) and heads and all(isinstance(h, dict) for h in heads)):
            raise ConfigError("model.decode_head of a CascadeEncoderDecoder must be a list of head dicts")
        if int(model.get("num_stages", len(heads))) != len(heads):
            raise ConfigError("model.num_stages must equal the number of decode heads")
        head_kw = [head_kwargs(h, f"model.decode_head[{i}]") for i, h in enumerate(heads)]
        for i, h in enumerate(head_kw):
            if (h["type"] in _CASCADE) != (i > 0):
                raise ConfigError(f"model.decode_head[{i}] {h['type']!r}: " +
                                  ("the first head of a cascade cannot refine logits" if i == 0 else
                                   f"heads after the first must be one of {_CASCADE}"))
    else:
        head_kw = [head_kwargs(_section(model, "decode_head", "model."))]
        if head_kw[0]["type"] in _CASCADE:
            raise ConfigError(f"model.decode_head {head_kw[0]['type']!r} needs a CascadeEncoderDecoder")
    kw = {"backbone": backbone_kwargs(_section(model, "backbone", "model.")),
          "head": head_kw[-1], "heads": head_kw,
          "mean": [float(v) for v in pre["mean"]], "std": [float(v) for v in pre["std"]],
          "rgb": bool(pre.get("bgr_to_rgb", False)), "mode": mode,
          "resize": resize_policy(test_pipeline(cfg)),
          "dataset": ((cfg.get("test_dataloader") or {}).get("dataset") or {}).get("type")}
    if mode == "slide":
        kw["crop_size"] = _pair(test_cfg.get("crop_size"), "model.test_cfg.crop_size")
        kw["stride"] = _pair(test_cfg.get("stride"), "model.test_cfg.stride")
    return kw


def build_backbone(kw: dict):
    from ...models import mmseg as M

    kw = dict(kw)
    kind = kw.pop("type")
    if kind in _RESNETS:
        return M.ResNet(**kw)
    return getattr(M, kind)(**kw)


def build_head(kw: dict):
    from ...models import mmseg as M

    kw = dict(kw)
    cls = getattr(M, kw.pop("type"))
    args = [kw.pop(k) for k in ("in_channels", "channels", "num_classes")]
    return cls(*args, **kw)


def build_segmentor(kw: dict):
    from ...models.mmseg import EncoderDecoder

    try:
        heads = [build_head(h) for h in kw.get("heads") or [kw["head"]]]
        return EncoderDecoder(build_backbone(kw["backbone"]), heads[0] if len(heads) == 1 else heads,
                              mean=kw["mean"], std=kw["std"], align_corners=kw["head"]["align_corners"],
                              mode=kw["mode"], crop_size=kw.get("crop_size"), stride=kw.get("stride")).eval()
    except ValueError as e:
        raise ConfigError(str(e)) from None


def dataset_classes(dataset: Optional[str], num_classes: int) -> list[str]:
    table = json.loads(Path(__file__).with_name("dataset_classes.json").read_text())
    names = table.get(dataset or "")
    if isinstance(names, list) and len(names) == num_classes:
        return list(names)
    return [f"class_{i}" for i in range(num_classes)]


def spec_for(kw: dict, classes: list[str]) -> dict:
    return {
        "task": "semantic_segmentation",
        "classes": classes,
        "inputs": [{"name": "images", "dtype": "float32", "layout": "NCHW", "color": "RGB" if kw["rgb"] else "BGR",
                    "shape": [1, 3, "height", "width"]}],
        "preprocess": {"resize": kw["resize"], "pad": {},
                       "normalize": {"mean": kw["mean"], "std": kw["std"], "where": "graph"}},
        "postprocess": {"type": "semantic_segmentation", "align_corners": kw["head"]["align_corners"]},
        "outputs": [{"name": "logits", "shape": [1, len(classes), "height", "width"],
                     "meaning": "class scores at the size of the input image"
                                + (f" (sliding {kw['crop_size']} windows, stride {kw['stride']})"
                                   if kw["mode"] == "slide" else "")}],
    }


# Parts of an mmseg checkpoint that inference does not use.
_TRAINING_ONLY = ("auxiliary_head.",)


def load_weights(model, weights: str):
    from ..checkpoint import load_checkpoint, load_into_module

    ckpt = load_checkpoint(weights)
    report = load_into_module(model, ckpt.state_dict, ignore=_TRAINING_ONLY)
    if report.missing or report.unexpected:
        key = (report.missing or report.unexpected)[0]
        raise CheckpointError(f"{weights}: does not fit this config: {len(report.missing)} model weights missing, "
                              f"{len(report.unexpected)} checkpoint weights without a place (e.g. {key})")
    meta = ckpt.meta if isinstance(ckpt.meta, dict) else {}
    classes = (meta.get("dataset_meta") or {}).get("classes")
    return ckpt, (list(classes) if classes else None)
