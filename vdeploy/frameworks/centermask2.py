"""centermask2 configs as a model source: CenterMask / CenterMask-Lite (VoVNet-V2 or ResNet + FPN,
FCOS, SAG-Mask, MaskIoU), no centermask2 or detectron2 installed.

The config is centermask2's: detectron2's defaults with centermask2's keys on top
(`centermask2_defaults.yaml`, its `get_cfg().dump()`), then the `_BASE_` chain and the file. It is
read here, once, into keyword arguments for `vdeploy.models.centermask`.

The VoVNet backbones are also registered in detectron2's BACKBONES registry, so a GeneralizedRCNN
with an RPN on a VoVNet (centermask2's `build_vovnet_fpn_backbone`) builds through detectron2's path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..errors import ConfigError, UserError
from ..models.base import DeployableModel
from ..models.centermask.center_roi_heads import ASSIGN_CRITERIA, CenterROIHeads, RatioROIPooler
from ..models.centermask.fcos import FCOS, FCOSHead
from ..models.centermask.fpn_blocks import LastLevelP6
from ..models.centermask.maskiou import MaskIoUHead
from ..models.centermask.meta_arch import CenterMask
from ..models.centermask.mobilenet import MobileNetV2
from ..models.centermask.panoptic import PanopticCenterMask
from ..models.centermask.sag_mask import SpatialAttentionMaskHead
from ..models.centermask.vovnet import VOVNET_SPECS, VoVNet
from ..models.detectron2.fpn import FPN, LastLevelP6P7
from ..models.detectron2.mask_head import MaskRCNNConvUpsampleHead
from ..models.detectron2.poolers import POOLER_TYPES, ROIPooler
from ..models.detectron2.registry import BACKBONES, ShapeSpec
from . import SOURCES, ModelSource
from .detectron2.build import (build_from_config, detection_spec, fixed_input, fpn_from_cfg, get, load_weights,
                               resnet_from_cfg, same_channels)
from .detectron2.config import load_config as load_detectron2_config
from .detectron2.config import read_with_bases

DEFAULTS_PATH = Path(__file__).with_name("centermask2_defaults.yaml")
# Keys that only centermask2's configs carry (after `_BASE_` resolution).
CENTERMASK_NAMES = {"PROPOSAL_GENERATOR.NAME": ("FCOS",), "ROI_HEADS.NAME": ("CenterROIHeads",),
                    "BACKBONE.NAME": ("build_vovnet_backbone", "build_vovnet_fpn_backbone",
                                      "build_fcos_vovnet_fpn_backbone", "build_fcos_resnet_fpn_backbone",
                                      "build_mnv2_backbone", "build_mobilenetv2_fpn_backbone",
                                      "build_fcos_mobilenetv2_fpn_backbone")}
CENTERMASK_KEYS = ("VOVNET", "FCOS", "MASKIOU_ON", "ROI_MASKIOU_HEAD")


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def load_config(path: str | Path) -> dict:
    """The fully merged centermask2 config of a YAML file, as a nested plain dict."""
    return load_detectron2_config(path, extra_defaults=DEFAULTS_PATH)


# --------------------------------------------------------------------------- backbones

def vovnet_from_cfg(cfg: dict, in_channels: int) -> VoVNet:
    v = get(cfg, "MODEL.VOVNET")
    _require(v["CONV_BODY"] in VOVNET_SPECS, f"MODEL.VOVNET.CONV_BODY {v['CONV_BODY']!r} is not one of "
             f"{', '.join(VOVNET_SPECS)}")
    try:
        return VoVNet(VOVNET_SPECS[v["CONV_BODY"]], v["OUT_FEATURES"], in_channels=in_channels, norm=v["NORM"],
                      stage_with_dcn=[bool(x) for x in v.get("STAGE_WITH_DCN", [False] * 4)],
                      with_modulated_dcn=bool(v.get("WITH_MODULATED_DCN", False)),
                      deformable_groups=int(v.get("DEFORMABLE_GROUPS", 1)))
    except ValueError as e:
        raise ConfigError(f"MODEL.VOVNET: {e}") from None


def _fcos_top_block(cfg: dict):
    """P6 (and P7) from P5, as MODEL.FCOS.TOP_LEVELS asks."""
    levels, channels = int(get(cfg, "MODEL.FCOS.TOP_LEVELS")), int(get(cfg, "MODEL.FPN.OUT_CHANNELS"))
    _require(levels in (0, 1, 2), f"MODEL.FCOS.TOP_LEVELS must be 0, 1 or 2, got {levels}")
    return {0: None, 1: LastLevelP6(channels, channels, "p5"), 2: LastLevelP6P7(channels, channels, "p5")}[levels]


def build_vovnet_backbone(cfg: dict, in_channels: int) -> VoVNet:
    return vovnet_from_cfg(cfg, in_channels)


def build_vovnet_fpn_backbone(cfg: dict, in_channels: int) -> FPN:
    from ..models.detectron2.fpn import LastLevelMaxPool

    return fpn_from_cfg(cfg, vovnet_from_cfg(cfg, in_channels), LastLevelMaxPool())


def build_fcos_vovnet_fpn_backbone(cfg: dict, in_channels: int) -> FPN:
    return fpn_from_cfg(cfg, vovnet_from_cfg(cfg, in_channels), _fcos_top_block(cfg))


def build_mnv2_backbone(cfg: dict, in_channels: int) -> MobileNetV2:
    # centermask2 takes the MobileNetV2's outputs from MODEL.RESNETS.OUT_FEATURES.
    try:
        return MobileNetV2(get(cfg, "MODEL.RESNETS.OUT_FEATURES"), in_channels=in_channels)
    except ValueError as e:
        raise ConfigError(f"MODEL.RESNETS.OUT_FEATURES: {e}") from None


def build_mobilenetv2_fpn_backbone(cfg: dict, in_channels: int) -> FPN:
    from ..models.detectron2.fpn import LastLevelMaxPool

    return fpn_from_cfg(cfg, build_mnv2_backbone(cfg, in_channels), LastLevelMaxPool())


def build_fcos_mobilenetv2_fpn_backbone(cfg: dict, in_channels: int) -> FPN:
    return fpn_from_cfg(cfg, build_mnv2_backbone(cfg, in_channels), _fcos_top_block(cfg))


def build_fcos_resnet_fpn_backbone(cfg: dict, in_channels: int) -> FPN:
    # centermask2 swaps in its MobileNetV2 when MODEL.MOBILENET is set.
    bottom_up = build_mnv2_backbone(cfg, in_channels) if get(cfg, "MODEL.MOBILENET") else \
        resnet_from_cfg(cfg, in_channels)
    return fpn_from_cfg(cfg, bottom_up, _fcos_top_block(cfg))


for _builder in (build_vovnet_backbone, build_vovnet_fpn_backbone, build_fcos_vovnet_fpn_backbone,
                 build_fcos_resnet_fpn_backbone, build_mnv2_backbone, build_mobilenetv2_fpn_backbone,
                 build_fcos_mobilenetv2_fpn_backbone):
    BACKBONES.register(_builder.__name__, _builder)


# --------------------------------------------------------------------------- FCOS and heads

def fcos_from_cfg(cfg: dict, shapes: dict[str, ShapeSpec]) -> FCOS:
    f = get(cfg, "MODEL.FCOS")
    _require(not f["USE_DEFORMABLE"], "deformable FCOS towers (MODEL.FCOS.USE_DEFORMABLE) are not supported")
    in_features = list(f["IN_FEATURES"])
    channels = same_channels(shapes, in_features, "MODEL.FCOS.IN_FEATURES")
    strides = [int(s) for s in f["FPN_STRIDES"]]
    _require(strides == [shapes[n].stride for n in in_features], f"MODEL.FCOS.FPN_STRIDES {strides} are not the "
             f"strides of {in_features} ({[shapes[n].stride for n in in_features]})")
    # centermask2 adds GroupNorm for "GN" and no norm for anything else.
    head = FCOSHead(channels, int(f["NUM_CLASSES"]), len(in_features), num_cls_convs=int(f["NUM_CLS_CONVS"]),
                    num_box_convs=int(f["NUM_BOX_CONVS"]), num_share_convs=int(f["NUM_SHARE_CONVS"]),
                    group_norm=f["NORM"] == "GN", use_scale=bool(f["USE_SCALE"]))
    return FCOS(in_features, strides, head, score_thresh=float(f["INFERENCE_TH_TEST"]),
                thresh_with_ctr=bool(f["THRESH_WITH_CTR"]), pre_nms_topk=int(f["PRE_NMS_TOPK_TEST"]),
                nms_thresh=float(f["NMS_TH"]), post_nms_topk=int(f["POST_NMS_TOPK_TEST"]))


def _mask_head(cfg: dict, in_channels: int, num_classes: int):
    m = get(cfg, "MODEL.ROI_MASK_HEAD")
    conv_dim = int(m["CONV_DIM"])
    kwargs = dict(conv_dims=[conv_dim] * int(m["NUM_CONV"]), num_classes=num_classes,
                  cls_agnostic=bool(m["CLS_AGNOSTIC_MASK"]), conv_norm=m["NORM"])
    if m["NAME"] == "SpatialAttentionMaskHead":
        return SpatialAttentionMaskHead(in_channels, conv_dim=conv_dim, **kwargs)
    if m["NAME"] == "MaskRCNNConvUpsampleHead":
        return MaskRCNNConvUpsampleHead(in_channels, deconv_dim=conv_dim, **kwargs)
    raise ConfigError(f"MODEL.ROI_MASK_HEAD.NAME {m['NAME']!r} is not supported "
                      "(SpatialAttentionMaskHead, MaskRCNNConvUpsampleHead)")


def center_roi_heads_from_cfg(cfg: dict, shapes: dict[str, ShapeSpec]) -> CenterROIHeads:
    _require(not get(cfg, "MODEL.KEYPOINT_ON"), "keypoint heads (MODEL.KEYPOINT_ON) are not supported")
    in_features = list(get(cfg, "MODEL.ROI_HEADS.IN_FEATURES"))
    if not get(cfg, "MODEL.MASK_ON"):
        return CenterROIHeads(in_features)
    channels = same_channels(shapes, in_features, "MODEL.ROI_HEADS.IN_FEATURES")
    num_classes = int(get(cfg, "MODEL.ROI_HEADS.NUM_CLASSES"))
    _require(num_classes == int(get(cfg, "MODEL.FCOS.NUM_CLASSES")), "MODEL.ROI_HEADS.NUM_CLASSES and "
             "MODEL.FCOS.NUM_CLASSES differ: the mask head must know the detector's classes")
    m = get(cfg, "MODEL.ROI_MASK_HEAD")
    _require(m["POOLER_TYPE"] in POOLER_TYPES, f"MODEL.ROI_MASK_HEAD.POOLER_TYPE {m['POOLER_TYPE']!r} is not "
             f"supported; supported: {sorted(POOLER_TYPES)}")
    _require(m["ASSIGN_CRITERION"] in ASSIGN_CRITERIA, f"MODEL.ROI_MASK_HEAD.ASSIGN_CRITERION "
             f"{m['ASSIGN_CRITERION']!r} is not one of {ASSIGN_CRITERIA}")
    pooler_cls = RatioROIPooler if m["ASSIGN_CRITERION"] == "ratio" else ROIPooler
    resolution = int(m["POOLER_RESOLUTION"])
    try:
        pooler = pooler_cls(resolution, [1.0 / shapes[f].stride for f in in_features],
                            int(m["POOLER_SAMPLING_RATIO"]), m["POOLER_TYPE"])
    except ValueError as e:
        raise ConfigError(f"MODEL.ROI_MASK_HEAD: {e}") from None
    maskiou = None
    if get(cfg, "MODEL.MASKIOU_ON"):
        h = get(cfg, "MODEL.ROI_MASKIOU_HEAD")
        _require(h["NAME"] == "MaskIoUHead", f"MODEL.ROI_MASKIOU_HEAD.NAME {h['NAME']!r} is not supported")
        # centermask2 sizes the MaskIoU input by ROI_MASK_HEAD.CONV_DIM but feeds it the pooled features.
        _require(int(m["CONV_DIM"]) == channels, f"MODEL.ROI_MASK_HEAD.CONV_DIM ({m['CONV_DIM']}) must equal the "
                 f"feature channels ({channels}) when MODEL.MASKIOU_ON")
        maskiou = MaskIoUHead(channels, resolution, conv_dim=int(h["CONV_DIM"]), num_conv=int(h["NUM_CONV"]),
                              num_classes=num_classes)
    return CenterROIHeads(in_features, pooler, _mask_head(cfg, channels, num_classes), maskiou)


def build_centermask(cfg: dict) -> CenterMask:
    m = get(cfg, "MODEL")
    _require(m["META_ARCHITECTURE"] in ("GeneralizedRCNN", "PanopticFPN"),
             f"MODEL.META_ARCHITECTURE {m['META_ARCHITECTURE']!r} is not supported with FCOS; "
             "FCOS models are GeneralizedRCNN or PanopticFPN")
    _require(m["ROI_HEADS"]["NAME"] == "CenterROIHeads", f"MODEL.ROI_HEADS.NAME {m['ROI_HEADS']['NAME']!r}: "
             "FCOS proposals go with CenterROIHeads")
    _require(not m.get("LOAD_PROPOSALS"), "precomputed proposals (MODEL.LOAD_PROPOSALS) are not supported")
    backbone = BACKBONES.get(m["BACKBONE"]["NAME"])(cfg, len(m["PIXEL_MEAN"]))
    shapes = backbone.output_shape()
    parts = (backbone, fcos_from_cfg(cfg, shapes), center_roi_heads_from_cfg(cfg, shapes))
    pixels = {"pixel_mean": m["PIXEL_MEAN"], "pixel_std": m["PIXEL_STD"]}
    if m["META_ARCHITECTURE"] == "PanopticFPN":
        from .detectron2.build_semantic import sem_seg_head_from_cfg

        _require(bool(m.get("MASK_ON")), "PanopticFPN without masks (MODEL.MASK_ON: False) is not supported")
        return PanopticCenterMask(*parts, sem_seg_head_from_cfg(cfg, shapes), **pixels)
    return CenterMask(*parts, **pixels)


# --------------------------------------------------------------------------- spec and entry points

def centermask_spec(cfg: dict, module: CenterMask) -> dict:
    """deploy.json's model part: detectron2's detection spec, with FCOS's classes and top-k and,
    with MaskIoU, the mask scores as an extra output."""
    mask_on = module.roi_heads.mask_on
    spec = detection_spec(cfg, getattr(module.backbone, "size_divisibility", 0), mask_on)
    n = int(get(cfg, "MODEL.FCOS.NUM_CLASSES"))
    spec["classes"] = spec["classes"] if len(spec["classes"]) == n else [f"class_{i}" for i in range(n)]
    spec["outputs"][0]["meaning"] = "x1,y1,x2,y2 in resized-image pixels (not clipped)"
    if mask_on and module.roi_heads.maskiou_head is not None:
        spec["outputs"].append({"name": "mask_scores", "shape": ["N"],
                                "meaning": "score x predicted mask IoU (centermask2's mask_scores)"})
    # The graph keeps FCOS's POST_NMS_TOPK_TEST best; centermask2 applies no other cap.
    topk = int(get(cfg, "MODEL.FCOS.POST_NMS_TOPK_TEST"))
    spec["postprocess"]["max_detections"] = topk if topk > 0 else None
    if isinstance(module, PanopticCenterMask):
        # PanopticFPN's task, stuff classes, semantic output and combination thresholds, after
        # CenterMask's own outputs (the graph's order).
        from .detectron2.build_semantic import panoptic_spec

        pan = panoptic_spec(cfg, module)
        spec.update(task=pan["task"], stuff_classes=pan["stuff_classes"])
        spec["outputs"].append(pan["outputs"][-1])
        spec["postprocess"].update({k: v for k, v in pan["postprocess"].items() if k != "max_detections"})
    return spec


def build_from_cfg(cfg: dict, weights: Optional[str] = None, *, source: str = "",
                   input_size: Optional[Sequence[int]] = None, **options) -> DeployableModel:
    if get(cfg, "MODEL.PROPOSAL_GENERATOR.NAME") != "FCOS":
        # An RPN model on a VoVNet: detectron2's GeneralizedRCNN with the backbones registered above.
        dm = build_from_config(cfg, weights, source=source, input_size=input_size, **options)
        dm.provenance["framework"] = "centermask2"
        return dm
    module = build_centermask(cfg).eval()
    spec = centermask_spec(cfg, module)
    provenance = {"source": source, "framework": "centermask2", "meta_architecture": "CenterMask",
                  **load_weights(module, weights)}
    module, size = fixed_input(module, spec, input_size)
    return DeployableModel(module, spec, provenance, batchable=False, input_size=size)


def build(spec_path: str, weights: Optional[str] = None, **options) -> DeployableModel:
    """ModelSource entry point: a centermask2 YAML config (with `_BASE_` chain) and its checkpoint."""
    from .overrides import apply_opts

    cfg = apply_opts(load_config(spec_path), options.pop("config_overrides", ()), spec_path)
    return build_from_cfg(cfg, weights, source=str(Path(spec_path)), **options)


def _dig(d, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def claims(spec: str) -> bool:
    """A YAML file whose `_BASE_`-resolved MODEL section names FCOS, CenterROIHeads, a VoVNet/FCOS
    backbone, or carries centermask2-only sections (VOVNET, FCOS, MASKIOU_ON, ROI_MASKIOU_HEAD)."""
    path = Path(spec)
    if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
        return False
    try:
        model = read_with_bases(path).get("MODEL")
    except UserError:
        return False
    if not isinstance(model, dict):
        return False
    if any(_dig(model, k) in names for k, names in CENTERMASK_NAMES.items()):
        return True
    return any(k in model for k in CENTERMASK_KEYS)


SOURCES.register("centermask2", ModelSource("centermask2", claims, build, precedence=10))
