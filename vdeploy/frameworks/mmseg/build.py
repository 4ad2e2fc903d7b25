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
from . import families_a_args as fa_args
from . import families_b_args as fb_args
from . import knet_args
from . import query_heads_args
from . import vit_args
from . import san_args
from . import vpd_args
from .args_common import _pair, _pick, _section, _tup, act_spec, norm_spec
from .backbone_args import _RESNETS, backbone_kwargs

_INTERP = {("cv2", "bilinear"): "cv2_linear", ("cv2", "nearest"): "cv2_nearest", ("cv2", "bicubic"): "cv2_cubic",
           ("cv2", "area"): "cv2_area", ("pillow", "bilinear"): "pil_bilinear"}


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
    "SETRUPHead": {"num_convs": 1, "up_scale": 4, "kernel_size": 3, "norm_layer": {"type": "LN", "eps": 1e-6}},
    "SETRMLAHead": {"mla_channels": 128, "up_scale": 4},
    "SegmenterMaskTransformerHead": {"num_layers": _REQUIRED, "num_heads": _REQUIRED, "embed_dims": _REQUIRED,
                                     "mlp_ratio": 4, "qkv_bias": True, "norm_cfg": {"type": "LN"},
                                     "act_cfg": {"type": "GELU"}},
    "DPTHead": {"embed_dims": 768, "post_process_channels": (96, 192, 384, 768), "readout_type": "ignore",
                "expand_channels": False, "norm_cfg": {"type": "BN"}, "act_cfg": {"type": "ReLU"}},
}
# Heads that refine the previous head's logits (only after the first head of a cascade).
_CASCADE = ("OCRHead",)
# Heads whose input is always a list of features (mmseg fixes input_transform='multiple_select').
_MULTI = ("UPerHead", "FPNHead", "SegformerHead", "ANNHead", "EncHead")
_HEAD_ARGS["LightHamHead"] = {"ham_channels": 512, "ham_kwargs": {}}; _MULTI += ("LightHamHead",)
_MULTI += ("SETRMLAHead", "DPTHead")
_HEAD_ARGS.update(fb_args.HEAD_ARGS); _MULTI += ("PointHead",); _CASCADE += ("PointHead",)


def head_kwargs(head: dict, where: str = "model.decode_head") -> dict:
    kind = head.get("type")
    if kind == "IterativeDecodeHead":  # K-Net
        return knet_args.iterative_decode_head(head, where)
    if kind in query_heads_args.HEADS:  # MaskFormer, Mask2Former
        return query_heads_args.head_kwargs(head, where)
    if kind not in _HEAD_ARGS:
        raise ConfigError(f"{where} type {kind!r} is not supported; "
                          f"expected one of {sorted([*_HEAD_ARGS, *query_heads_args.HEADS])}")
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


# --------------------------------------------------------------------------- necks

def _fpn(neck: dict, where: str) -> dict:
    for key in ("in_channels", "out_channels", "num_outs"):
        if key not in neck:
            raise ConfigError(f"{where} needs `{key}`")
    extra = neck.get("add_extra_convs", False)
    if extra is True:  # mmseg's spelling of the old boolean
        extra = "on_input" if neck.get("extra_convs_on_inputs", False) else "on_output"
    if extra not in (False, "on_input", "on_lateral", "on_output"):
        raise ConfigError(f"{where}.add_extra_convs {extra!r} is not supported")
    upsample = dict(neck.get("upsample_cfg") or {"mode": "nearest"})
    if upsample.get("mode", "nearest") not in ("nearest", "bilinear") or set(upsample) - {"mode", "scale_factor",
                                                                                          "align_corners"}:
        raise ConfigError(f"{where}.upsample_cfg {upsample!r} is not supported")
    in_channels = tuple(neck["in_channels"])
    end = int(neck.get("end_level", -1))
    start = int(neck.get("start_level", 0))
    num_outs = int(neck["num_outs"])
    if (end == -1 and num_outs < len(in_channels) - start) or (end != -1 and num_outs != end - start):
        raise ConfigError(f"{where}: num_outs does not fit start_level/end_level")
    return {"in_channels": in_channels, "out_channels": int(neck["out_channels"]), "num_outs": num_outs,
            "start_level": start, "end_level": end, "add_extra_convs": extra or "",
            "relu_before_extra_convs": bool(neck.get("relu_before_extra_convs", False)),
            "no_norm_on_lateral": bool(neck.get("no_norm_on_lateral", False)),
            "norm": norm_spec(neck, where), "act": act_spec(neck, where), "upsample": upsample}


def _icneck(neck: dict, where: str) -> dict:
    kw = _pick(neck, {"in_channels": (64, 256, 256), "out_channels": 128, "align_corners": False})
    if len(kw["in_channels"]) != 3:
        raise ConfigError(f"{where}.in_channels needs 3 entries")
    return dict(kw, norm=norm_spec(neck, where, {"type": "BN"}), act=act_spec(neck, where, {"type": "ReLU"}))


def _jpu(neck: dict, where: str) -> dict:
    kw = _pick(neck, {"in_channels": (512, 1024, 2048), "mid_channels": 512, "start_level": 0, "end_level": -1,
                      "dilations": (1, 2, 4, 8), "align_corners": False})
    end = len(kw["in_channels"]) if kw["end_level"] == -1 else kw["end_level"]
    if not 0 <= kw["start_level"] < end <= len(kw["in_channels"]):
        raise ConfigError(f"{where}: start_level/end_level do not fit in_channels")
    if neck.get("conv_cfg"):
        raise ConfigError(f"{where}.conv_cfg is not supported")
    return dict(kw, norm=norm_spec(neck, where, {"type": "BN"}), act=act_spec(neck, where, {"type": "ReLU"}))


_NECK_ARGS = {"FPN": _fpn, "ICNeck": _icneck, "JPU": _jpu}
_NECK_ARGS.update(MultiLevelNeck=vit_args.multilevel_neck, MLANeck=vit_args.mla_neck,
                  Feature2Pyramid=vit_args.feature2pyramid)


def neck_kwargs(neck: dict, where: str = "model.neck") -> dict:
    kind = neck.get("type")
    if kind not in _NECK_ARGS:
        raise ConfigError(f"{where} type {kind!r} is not supported; expected one of {sorted(_NECK_ARGS)}")
    return dict(_NECK_ARGS[kind](neck, where), type=kind)


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
    steps = [s for s in pipeline if isinstance(s, dict)
             and s.get("type") in ("Resize", "RandomResize", "ResizeShortestEdge")]
    if not steps:
        return {"type": "none"}
    if len(steps) > 1 or steps[0]["type"] == "RandomResize":
        raise ConfigError("the test pipeline must have at most one `Resize` or `ResizeShortestEdge` step")
    step = steps[0]
    if step["type"] == "ResizeShortestEdge":
        return _shortest_edge(step)
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


def _encoder_decoder_kwargs(model: dict, test_cfg: dict) -> dict:
    """backbone, neck and decode head(s) of an EncoderDecoder or CascadeEncoderDecoder."""
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
        head_kw = [fb_args.point_head_test_cfg(h, test_cfg, i == len(head_kw) - 1) for i, h in enumerate(head_kw)]
    else:
        head_kw = [head_kwargs(_section(model, "decode_head", "model."))]
        if head_kw[0]["type"] in _CASCADE:
            raise ConfigError(f"model.decode_head {head_kw[0]['type']!r} needs a CascadeEncoderDecoder")
    return {"backbone": backbone_kwargs(_section(model, "backbone", "model.")), "head": head_kw[-1], "heads": head_kw,
            "neck": neck_kwargs(model["neck"]) if model.get("neck") else None}


def _shortest_edge(step: dict) -> dict:
    """mmseg's ResizeShortestEdge: detectron2's output size (shortest edge to `scale`, or the
    smallest of a list, the longest at most `max_size`, int(x + 0.5)), then mmcv's keep-ratio
    Resize to that size with OpenCV bilinear. The second step reproduces the first's size
    whenever the longer side is under 4x the shorter (checked over every size from 16 to 3000);
    beyond, where `max_size` binds, mmcv's rounding can make the long side 1-2 pixels shorter
    than the size used here."""
    scale, max_size = step.get("scale"), step.get("max_size")
    sizes = scale if isinstance(scale, (list, tuple)) else [scale]
    if not sizes or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes):
        raise ConfigError(f"test pipeline ResizeShortestEdge.scale must be a positive int or a list of them, "
                          f"got {scale!r}")
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < min(sizes):
        raise ConfigError(f"test pipeline ResizeShortestEdge.max_size must be an int >= the scale, got {max_size!r}")
    return {"type": "shortest_edge", "min_size": min(sizes), "max_size": max_size, "interp": "cv2_linear"}


def model_kwargs(cfg: dict) -> dict:
    model = _section(cfg, "model", "")
    if model.get("type") not in ("EncoderDecoder", "CascadeEncoderDecoder", "MultimodalEncoderDecoder",
                                 "DepthEstimator"):
        raise ConfigError(f"model type {model.get('type')!r} is not supported; expected 'EncoderDecoder', "
                          "'CascadeEncoderDecoder', 'MultimodalEncoderDecoder' or 'DepthEstimator'")
    pre = model.get("data_preprocessor") or cfg.get("data_preprocessor") or {}
    if "mean" not in pre or "std" not in pre:
        raise ConfigError("model.data_preprocessor needs `mean` and `std`")
    test_cfg = model.get("test_cfg") or {}
    mode = test_cfg.get("mode", "whole")
    depth = model["type"] == "DepthEstimator"
    modes = ("whole", "slide", "slide_flip") if depth else ("whole", "slide")
    if mode not in modes:
        raise ConfigError(f"model.test_cfg.mode {mode!r} is not one of {', '.join(map(repr, modes))}")
    dataset = ((cfg.get("test_dataloader") or {}).get("dataset") or {}).get("type")
    if model["type"] == "MultimodalEncoderDecoder":
        image = backbone_kwargs(_section(model, "image_encoder", "model."), "model.image_encoder")
        kw = san_args.model_kwargs(model, image)
    elif depth:  # VPD
        kw = vpd_args.model_kwargs(model, dataset)
        mode = vpd_args.mode_built(mode)
    else:
        kw = _encoder_decoder_kwargs(model, test_cfg)
    kw.update({"mean": [float(v) for v in pre["mean"]], "std": [float(v) for v in pre["std"]],
               "rgb": bool(pre.get("bgr_to_rgb", False)), "mode": mode,
               "resize": resize_policy(test_pipeline(cfg)), "dataset": dataset,
               "multiple_of": fa_args.multiple_of(cfg, test_pipeline(cfg), mode)})
    if mode in ("slide", "slide_flip"):
        kw["crop_size"] = _pair(test_cfg.get("crop_size"), "model.test_cfg.crop_size")
        kw["stride"] = _pair(test_cfg.get("stride"), "model.test_cfg.stride")
    return kw


def build_backbone(kw: dict):
    from ...models import mmseg as M

    kw = dict(kw)
    kind = kw.pop("type")
    if kind in _RESNETS:
        return M.ResNet(**kw)
    if "backbone" in kw:  # a network inside the backbone (BiSeNetV1's context path)
        kw["backbone"] = build_backbone(kw["backbone"])
    return getattr(M, kind.rpartition(".")[2])(**kw)  # "mmpretrain.ConvNeXt" -> ConvNeXt


def build_head(kw: dict):
    from ...models import mmseg as M

    kw = dict(kw)
    if kw["type"] == "IterativeDecodeHead":  # K-Net: its kernel-generate head is built as any head
        return M.IterativeDecodeHead(build_head(kw["kernel_generate_head"]), kw["kernel_update_head"])
    if kw["type"] in query_heads_args.HEADS:
        return query_heads_args.build(kw)
    cls = getattr(M, kw.pop("type"))
    args = [kw.pop(k) for k in ("in_channels", "channels", "num_classes")]
    return cls(*args, **kw)


def build_segmentor(kw: dict):
    from ...models import mmseg as M
    from ...models.mmseg import EncoderDecoder

    try:
        if kw.get("type") == "DepthEstimator":
            if kw.get("multiple_of"):
                raise ConfigError("a DepthEstimator with a size divisor or ResizeToMultiple is not supported")
            return vpd_args.build(kw).eval()
        if kw.get("type") == "MultimodalEncoderDecoder":
            how, divisor = kw.get("multiple_of") or ("pad", 1)
            if how != "pad":
                raise ConfigError("a MultimodalEncoderDecoder with a test pipeline ResizeToMultiple is not supported")
            return san_args.build(kw, kw["mean"], kw["std"], kw["mode"], divisor, kw.get("crop_size"),
                                  kw.get("stride")).eval()
        heads = [build_head(h) for h in kw.get("heads") or [kw["head"]]]
        neck = None
        if kw.get("neck"):
            nkw = dict(kw["neck"])
            neck = getattr(M, nkw.pop("type"))(**nkw)
        cls, extra = (M.MultipleOfEncoderDecoder, {"multiple_of": kw["multiple_of"]}) if kw.get("multiple_of") \
            else (EncoderDecoder, {})
        return cls(build_backbone(kw["backbone"]), heads[0] if len(heads) == 1 else heads, neck=neck,
                              mean=kw["mean"], std=kw["std"], align_corners=kw["head"]["align_corners"],
                              mode=kw["mode"], crop_size=kw.get("crop_size"), stride=kw.get("stride"), **extra).eval()
    except ValueError as e:
        raise ConfigError(str(e)) from None


def dataset_classes(dataset: Optional[str], num_classes: int) -> list[str]:
    table = json.loads(Path(__file__).with_name("dataset_classes.json").read_text())
    names = table.get(dataset or "")
    if isinstance(names, list) and len(names) == num_classes:
        return list(names)
    return [f"class_{i}" for i in range(num_classes)]


def spec_for(kw: dict, classes: list[str]) -> dict:
    if kw.get("type") == "DepthEstimator":
        return depth_spec(kw)
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


def depth_spec(kw: dict) -> dict:
    """A DepthEstimator's: depth in metres at the input's size; the host resizes it to the photo
    (bilinear, the head's align_corners), as mmseg's postprocess_result."""
    head = kw["head"]
    meaning = "depth in metres at the size of the input image"
    if kw["mode"] == "slide_flip":
        meaning += (f" (sliding {kw['crop_size'][0]}x{kw['crop_size'][1]} windows, stride "
                    f"{kw['stride'][0]}x{kw['stride'][1]}, each averaged with its mirror)")
    return {
        "task": "depth_estimation",
        "classes": [],
        "inputs": [{"name": "images", "dtype": "float32", "layout": "NCHW", "color": "RGB" if kw["rgb"] else "BGR",
                    "shape": [1, 3, "height", "width"]}],
        "preprocess": {"resize": kw["resize"], "pad": {},
                       "normalize": {"mean": kw["mean"], "std": kw["std"], "where": "graph"}},
        "postprocess": {"type": "depth_estimation", "align_corners": head["align_corners"],
                        "max_depth": head["max_depth"], "unit": "m"},
        "outputs": [{"name": "depth", "shape": [1, 1, "height", "width"], "meaning": meaning}],
    }


# Parts of an mmseg checkpoint that inference does not use.
_TRAINING_ONLY = ("auxiliary_head.",)


def load_weights(model, weights: str, ignore: tuple = ()):
    """Load an mmseg checkpoint; `ignore`: further key prefixes inference never uses (VPD's)."""
    from ..checkpoint import load_checkpoint, load_into_module

    ckpt = load_checkpoint(weights)
    report = load_into_module(model, ckpt.state_dict, ignore=_TRAINING_ONLY + tuple(ignore))
    if report.missing or report.unexpected:
        key = (report.missing or report.unexpected)[0]
        raise CheckpointError(f"{weights}: does not fit this config: {len(report.missing)} model weights missing, "
                              f"{len(report.unexpected)} checkpoint weights without a place (e.g. {key})")
    meta = ckpt.meta if isinstance(ckpt.meta, dict) else {}
    classes = (meta.get("dataset_meta") or {}).get("classes")
    return ckpt, (list(classes) if classes else None)
