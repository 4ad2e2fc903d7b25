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

_HEADS = ("FCNHead", "PSPHead", "ASPPHead", "DepthwiseSeparableASPPHead")
_BACKBONES = {"ResNet": (False, False), "ResNetV1c": (True, False), "ResNetV1d": (True, True)}  # deep_stem, avg_down
_NORMS = ("BN", "SyncBN", "BN2d")
_INTERP = {("cv2", "bilinear"): "cv2_linear", ("cv2", "nearest"): "cv2_nearest", ("cv2", "bicubic"): "cv2_cubic",
           ("cv2", "area"): "cv2_area", ("pillow", "bilinear"): "pil_bilinear"}


def _section(cfg: dict, key: str, where: str) -> dict:
    value = cfg.get(key)
    if not isinstance(value, dict):
        raise ConfigError(f"config has no `{where}{key}` dict")
    return value


def _check_norm_act(part: dict, where: str) -> None:
    norm = (part.get("norm_cfg") or {"type": "BN"}).get("type")
    if norm not in _NORMS:
        raise ConfigError(f"{where}.norm_cfg type {norm!r} is not supported; expected one of {_NORMS}")
    act = (part.get("act_cfg") or {"type": "ReLU"}).get("type")
    if act != "ReLU":
        raise ConfigError(f"{where}.act_cfg type {act!r} is not supported; only ReLU is")


def backbone_kwargs(bb: dict) -> dict:
    kind = bb.get("type")
    if kind not in _BACKBONES:
        raise ConfigError(f"model.backbone type {kind!r} is not supported; expected one of {sorted(_BACKBONES)}")
    _check_norm_act(bb, "model.backbone")
    for key in ("dcn", "plugins", "multi_grid"):
        if bb.get(key):
            raise ConfigError(f"model.backbone.{key} is not supported")
    if bb.get("num_stages", 4) != 4:
        raise ConfigError("model.backbone.num_stages must be 4")
    deep_stem, avg_down = _BACKBONES[kind]
    return {"depth": int(bb.get("depth", 50)), "stem_channels": int(bb.get("stem_channels", 64)),
            "base_channels": int(bb.get("base_channels", 64)),
            "strides": tuple(bb.get("strides", (1, 2, 2, 2))), "dilations": tuple(bb.get("dilations", (1, 1, 1, 1))),
            "out_indices": tuple(bb.get("out_indices", (0, 1, 2, 3))),
            "deep_stem": bool(bb.get("deep_stem", deep_stem)), "avg_down": bool(bb.get("avg_down", avg_down)),
            "contract_dilation": bool(bb.get("contract_dilation", False)), "style": bb.get("style", "pytorch")}


def head_kwargs(head: dict) -> dict:
    kind = head.get("type")
    if kind not in _HEADS:
        raise ConfigError(f"model.decode_head type {kind!r} is not supported; expected one of {_HEADS}")
    _check_norm_act(head, "model.decode_head")
    if head.get("input_transform") is not None:
        raise ConfigError("model.decode_head.input_transform is not supported")
    num_classes = int(head["num_classes"])
    out_channels = int(head.get("out_channels", num_classes))
    if out_channels != num_classes:
        raise ConfigError("model.decode_head with out_channels != num_classes (binary sigmoid heads) is not supported")
    kw: dict[str, Any] = {"type": kind, "in_channels": int(head["in_channels"]), "channels": int(head["channels"]),
                          "num_classes": num_classes, "in_index": int(head.get("in_index", -1)),
                          "align_corners": bool(head.get("align_corners", False))}
    if kind == "FCNHead":
        kw.update(num_convs=int(head.get("num_convs", 2)), kernel_size=int(head.get("kernel_size", 3)),
                  dilation=int(head.get("dilation", 1)), concat_input=bool(head.get("concat_input", True)))
    elif kind == "PSPHead":
        kw.update(pool_scales=tuple(head.get("pool_scales", (1, 2, 3, 6))))
    else:
        kw.update(dilations=tuple(head.get("dilations", (1, 6, 12, 18))))
        if kind == "DepthwiseSeparableASPPHead":
            kw.update(c1_in_channels=int(head["c1_in_channels"]), c1_channels=int(head["c1_channels"]))
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
    if model.get("type") != "EncoderDecoder":
        raise ConfigError(f"model type {model.get('type')!r} is not supported; only 'EncoderDecoder' is")
    pre = model.get("data_preprocessor") or cfg.get("data_preprocessor") or {}
    if "mean" not in pre or "std" not in pre:
        raise ConfigError("model.data_preprocessor needs `mean` and `std`")
    test_cfg = model.get("test_cfg") or {}
    mode = test_cfg.get("mode", "whole")
    if mode not in ("whole", "slide"):
        raise ConfigError(f"model.test_cfg.mode {mode!r} is not one of 'whole', 'slide'")
    kw = {"backbone": backbone_kwargs(_section(model, "backbone", "model.")),
          "head": head_kwargs(_section(model, "decode_head", "model.")),
          "mean": [float(v) for v in pre["mean"]], "std": [float(v) for v in pre["std"]],
          "rgb": bool(pre.get("bgr_to_rgb", False)), "mode": mode,
          "resize": resize_policy(test_pipeline(cfg)),
          "dataset": ((cfg.get("test_dataloader") or {}).get("dataset") or {}).get("type")}
    if mode == "slide":
        kw["crop_size"] = _pair(test_cfg.get("crop_size"), "model.test_cfg.crop_size")
        kw["stride"] = _pair(test_cfg.get("stride"), "model.test_cfg.stride")
    return kw


def build_segmentor(kw: dict):
    from ...models.mmseg import ASPPHead, DepthwiseSeparableASPPHead, EncoderDecoder, FCNHead, PSPHead, ResNet

    heads = {"FCNHead": FCNHead, "PSPHead": PSPHead, "ASPPHead": ASPPHead,
             "DepthwiseSeparableASPPHead": DepthwiseSeparableASPPHead}
    head_kw = dict(kw["head"])
    head_cls = heads[head_kw.pop("type")]
    args = [head_kw.pop(k) for k in ("in_channels", "channels", "num_classes")]
    try:
        backbone = ResNet(**kw["backbone"])
        head = head_cls(*args, **head_kw)
        return EncoderDecoder(backbone, head, mean=kw["mean"], std=kw["std"], align_corners=kw["head"]["align_corners"],
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
