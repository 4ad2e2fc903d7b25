"""The detectron2 config edge: one merged config dict in, plain keyword arguments to the modules out.

`build(config_path, weights, **options)` is the ModelSource entry point; `build_from_config(cfg,
...)` does the same from an already-loaded config dict. The `*_from_cfg` helpers are public so that
other heads' builders (cascade, RetinaNet) reuse exactly the same readings of the config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from ...errors import CheckpointError, ConfigError
from ...registry import import_all
from ...models.base import DeployableModel
from ...models.detectron2.coco_classes import COCO_CLASSES
from ...models.detectron2.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from ...models.detectron2.keypoint_head import KRCNNConvDeconvUpsampleHead
from ...models.detectron2.letterbox import LetterboxCrop
from ...models.detectron2.mask_head import MaskRCNNConvUpsampleHead
from ...models.detectron2.poolers import POOLER_TYPES, ROIPooler
from ...models.detectron2.rcnn import GeneralizedRCNN
from ...models.detectron2.registry import BACKBONES, META_ARCHS, PROPOSAL_GENERATORS, ROI_HEADS, ShapeSpec
from ...models.detectron2.resnet import ResNet
from ...runtime.coco_keypoints import keypoint_meta
from ...models.detectron2.roi_heads import (FastRCNNConvFCHead, FastRCNNOutputLayers, Res5ROIHeads,
                                            StandardROIHeads, make_res5_stage)
from ...models.detectron2.rpn import RPN, AnchorGenerator, StandardRPNHead

# Modules of other heads that register their builders here when imported (absent = not written).
_EXTRA_BUILDERS = ("vdeploy.frameworks.detectron2.build_cascade", "vdeploy.frameworks.detectron2.build_retinanet",
                   "vdeploy.frameworks.detectron2.build_semantic")
# Meta architectures whose deploy.json model part is not detection_spec's: name -> spec(cfg, module).
ARCH_SPECS: dict = {}


def get(cfg: dict, dotted: str) -> Any:
    """cfg["A"]["B"]["C"] for "A.B.C", with a ConfigError naming the key when it is absent."""
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"detectron2 config has no {dotted}")
        node = node[part]
    return node


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


# --------------------------------------------------------------------------- backbones

def resnet_from_cfg(cfg: dict, in_channels: int, out_features: Optional[Sequence[str]] = None) -> ResNet:
    r = get(cfg, "MODEL.RESNETS")
    try:
        return ResNet(int(r["DEPTH"]), tuple(out_features or r["OUT_FEATURES"]), in_channels=in_channels,
                      stem_out_channels=int(r["STEM_OUT_CHANNELS"]), res2_out_channels=int(r["RES2_OUT_CHANNELS"]),
                      num_groups=int(r["NUM_GROUPS"]), width_per_group=int(r["WIDTH_PER_GROUP"]),
                      stride_in_1x1=bool(r["STRIDE_IN_1X1"]), res5_dilation=int(r["RES5_DILATION"]), norm=r["NORM"],
                      deform_on_per_stage=[bool(v) for v in r.get("DEFORM_ON_PER_STAGE", [False] * 4)],
                      deform_modulated=bool(r.get("DEFORM_MODULATED", False)),
                      deform_num_groups=int(r.get("DEFORM_NUM_GROUPS", 1)))
    except ValueError as e:
        raise ConfigError(f"MODEL.RESNETS: {e}") from None


def fpn_from_cfg(cfg: dict, bottom_up, top_block) -> FPN:
    f = get(cfg, "MODEL.FPN")
    try:
        return FPN(bottom_up, f["IN_FEATURES"], int(f["OUT_CHANNELS"]), norm=f["NORM"], top_block=top_block,
                   fuse_type=f["FUSE_TYPE"])
    except ValueError as e:
        raise ConfigError(f"MODEL.FPN: {e}") from None


@BACKBONES.register("build_resnet_backbone")
def build_resnet_backbone(cfg: dict, in_channels: int) -> ResNet:
    return resnet_from_cfg(cfg, in_channels)


@BACKBONES.register("build_resnet_fpn_backbone")
def build_resnet_fpn_backbone(cfg: dict, in_channels: int) -> FPN:
    return fpn_from_cfg(cfg, resnet_from_cfg(cfg, in_channels), LastLevelMaxPool())


@BACKBONES.register("build_retinanet_resnet_fpn_backbone")
def build_retinanet_resnet_fpn_backbone(cfg: dict, in_channels: int) -> FPN:
    bottom_up = resnet_from_cfg(cfg, in_channels)
    c5 = bottom_up.output_shape().get("res5")
    _require(c5 is not None, "RetinaNet's FPN needs res5 among MODEL.RESNETS.OUT_FEATURES")
    return fpn_from_cfg(cfg, bottom_up, LastLevelP6P7(c5.channels, int(get(cfg, "MODEL.FPN.OUT_CHANNELS")), "res5"))


# --------------------------------------------------------------------------- proposal generator

def anchor_generator_from_cfg(cfg: dict, strides: Sequence[int]) -> AnchorGenerator:
    a = get(cfg, "MODEL.ANCHOR_GENERATOR")
    _require(a["NAME"] == "DefaultAnchorGenerator", f"anchor generator {a['NAME']!r} is not supported")
    try:
        return AnchorGenerator(a["SIZES"], a["ASPECT_RATIOS"], strides, float(a["OFFSET"]))
    except ValueError as e:
        raise ConfigError(f"MODEL.ANCHOR_GENERATOR: {e}") from None


def same_channels(shapes: dict[str, ShapeSpec], features: Sequence[str], what: str) -> int:
    """The channel count the named backbone outputs share; ConfigError when one is missing or they differ."""
    _require(all(f in shapes for f in features), f"{what} {list(features)} are not backbone outputs {list(shapes)}")
    channels = {shapes[f].channels for f in features}
    _require(len(channels) == 1, f"{what} {list(features)} differ in channels")
    return channels.pop()


@PROPOSAL_GENERATORS.register("RPN")
def build_rpn(cfg: dict, shapes: dict[str, ShapeSpec]) -> RPN:
    r = get(cfg, "MODEL.RPN")
    _require(r["HEAD_NAME"] == "StandardRPNHead", f"RPN head {r['HEAD_NAME']!r} is not supported")
    in_features = list(r["IN_FEATURES"])
    channels = same_channels(shapes, in_features, "MODEL.RPN.IN_FEATURES")
    anchors = anchor_generator_from_cfg(cfg, [shapes[f].stride for f in in_features])
    _require(len(set(anchors.num_anchors)) == 1, "RPN needs the same number of anchors on every level")
    head = StandardRPNHead(channels, anchors.num_anchors[0], conv_dims=r.get("CONV_DIMS", [-1]))
    return RPN(in_features, head, anchors, bbox_reg_weights=r["BBOX_REG_WEIGHTS"], nms_thresh=float(r["NMS_THRESH"]),
               pre_nms_topk=int(r["PRE_NMS_TOPK_TEST"]), post_nms_topk=int(r["POST_NMS_TOPK_TEST"]),
               min_box_size=float(get(cfg, "MODEL.PROPOSAL_GENERATOR.MIN_SIZE")))


# --------------------------------------------------------------------------- ROI heads

def pooler_from_cfg(cfg: dict, head: str, in_features: Sequence[str], shapes: dict[str, ShapeSpec]) -> ROIPooler:
    """The ROIPooler of MODEL.<head> (ROI_BOX_HEAD or ROI_MASK_HEAD) over `in_features`."""
    h = get(cfg, f"MODEL.{head}")
    _require(h["POOLER_TYPE"] in POOLER_TYPES, f"MODEL.{head}.POOLER_TYPE {h['POOLER_TYPE']!r} is not supported; "
             f"supported: {sorted(POOLER_TYPES)}")
    try:
        return ROIPooler(int(h["POOLER_RESOLUTION"]), [1.0 / shapes[f].stride for f in in_features],
                         int(h["POOLER_SAMPLING_RATIO"]), h["POOLER_TYPE"])
    except ValueError as e:
        raise ConfigError(f"MODEL.{head}: {e}") from None


def box_head_from_cfg(cfg: dict, in_channels: int) -> FastRCNNConvFCHead:
    h = get(cfg, "MODEL.ROI_BOX_HEAD")
    _require(h["NAME"] == "FastRCNNConvFCHead", f"box head {h['NAME']!r} is not supported")
    return FastRCNNConvFCHead(in_channels, int(h["POOLER_RESOLUTION"]), conv_dims=[int(h["CONV_DIM"])] * int(h["NUM_CONV"]),
                              fc_dims=[int(h["FC_DIM"])] * int(h["NUM_FC"]), conv_norm=h["NORM"])


def fast_rcnn_from_cfg(cfg: dict, input_size: int, *, bbox_reg_weights: Optional[Sequence[float]] = None,
                       cls_agnostic_bbox_reg: Optional[bool] = None) -> FastRCNNOutputLayers:
    """FastRCNNOutputLayers; cascade stages pass their own weights and class-agnostic regression."""
    h, r = get(cfg, "MODEL.ROI_BOX_HEAD"), get(cfg, "MODEL.ROI_HEADS")
    return FastRCNNOutputLayers(
        input_size, int(r["NUM_CLASSES"]),
        cls_agnostic_bbox_reg=bool(h["CLS_AGNOSTIC_BBOX_REG"] if cls_agnostic_bbox_reg is None else cls_agnostic_bbox_reg),
        bbox_reg_weights=bbox_reg_weights or h["BBOX_REG_WEIGHTS"], score_thresh=float(r["SCORE_THRESH_TEST"]),
        nms_thresh=float(r["NMS_THRESH_TEST"]), topk_per_image=int(get(cfg, "TEST.DETECTIONS_PER_IMAGE")),
        use_sigmoid_ce=bool(h.get("USE_SIGMOID_CE", False)))


def mask_head_from_cfg(cfg: dict, in_channels: int) -> MaskRCNNConvUpsampleHead:
    m = get(cfg, "MODEL.ROI_MASK_HEAD")
    _require(m["NAME"] == "MaskRCNNConvUpsampleHead", f"mask head {m['NAME']!r} is not supported")
    conv_dim = int(m["CONV_DIM"])
    return MaskRCNNConvUpsampleHead(in_channels, conv_dims=[conv_dim] * int(m["NUM_CONV"]), deconv_dim=conv_dim,
                                    num_classes=int(get(cfg, "MODEL.ROI_HEADS.NUM_CLASSES")),
                                    cls_agnostic=bool(m["CLS_AGNOSTIC_MASK"]), conv_norm=m["NORM"])


def keypoint_head_from_cfg(cfg: dict, in_channels: int) -> KRCNNConvDeconvUpsampleHead:
    k = get(cfg, "MODEL.ROI_KEYPOINT_HEAD")
    _require(k["NAME"] == "KRCNNConvDeconvUpsampleHead", f"MODEL.ROI_KEYPOINT_HEAD.NAME {k['NAME']!r} is not supported")
    return KRCNNConvDeconvUpsampleHead(in_channels, num_keypoints=int(k["NUM_KEYPOINTS"]),
                                       conv_dims=[int(d) for d in k["CONV_DIMS"]])


def _roi_in_features(cfg: dict, shapes: dict[str, ShapeSpec]) -> list[str]:
    in_features = list(get(cfg, "MODEL.ROI_HEADS.IN_FEATURES"))
    same_channels(shapes, in_features, "MODEL.ROI_HEADS.IN_FEATURES")
    return in_features


@ROI_HEADS.register("StandardROIHeads")
def build_standard_roi_heads(cfg: dict, shapes: dict[str, ShapeSpec]) -> StandardROIHeads:
    in_features = _roi_in_features(cfg, shapes)
    channels = shapes[in_features[0]].channels
    box_head = box_head_from_cfg(cfg, channels)
    masks = {}
    if get(cfg, "MODEL.MASK_ON"):
        masks = {"mask_pooler": pooler_from_cfg(cfg, "ROI_MASK_HEAD", in_features, shapes),
                 "mask_head": mask_head_from_cfg(cfg, channels)}
    if get(cfg, "MODEL.KEYPOINT_ON"):
        masks.update(keypoint_pooler=pooler_from_cfg(cfg, "ROI_KEYPOINT_HEAD", in_features, shapes),
                     keypoint_head=keypoint_head_from_cfg(cfg, channels))
    return StandardROIHeads(in_features, pooler_from_cfg(cfg, "ROI_BOX_HEAD", in_features, shapes), box_head,
                            fast_rcnn_from_cfg(cfg, box_head.output_size), **masks)


@ROI_HEADS.register("Res5ROIHeads")
def build_res5_roi_heads(cfg: dict, shapes: dict[str, ShapeSpec]) -> Res5ROIHeads:
    in_features = _roi_in_features(cfg, shapes)
    _require(len(in_features) == 1, "Res5ROIHeads takes exactly one input feature (res4)")
    r = get(cfg, "MODEL.RESNETS")
    # detectron2 refuses it too ("Deformable conv is not yet supported in res5 head").
    _require(not bool(list(r.get("DEFORM_ON_PER_STAGE", [False] * 4))[-1]),
             "MODEL.RESNETS.DEFORM_ON_PER_STAGE on res5 is not supported with Res5ROIHeads (nor by detectron2)")
    try:
        res5 = make_res5_stage(depth=int(r["DEPTH"]), res2_out_channels=int(r["RES2_OUT_CHANNELS"]),
                               num_groups=int(r["NUM_GROUPS"]), width_per_group=int(r["WIDTH_PER_GROUP"]),
                               stride_in_1x1=bool(r["STRIDE_IN_1X1"]), norm=r["NORM"],
                               res5_dilation=int(r["RES5_DILATION"]))
    except ValueError as e:
        raise ConfigError(f"MODEL.RESNETS: {e}") from None
    out_channels = int(r["RES2_OUT_CHANNELS"]) * 8
    mask_head = mask_head_from_cfg(cfg, out_channels) if get(cfg, "MODEL.MASK_ON") else None
    return Res5ROIHeads(in_features, pooler_from_cfg(cfg, "ROI_BOX_HEAD", in_features, shapes), res5,
                        fast_rcnn_from_cfg(cfg, out_channels), mask_head=mask_head)


# --------------------------------------------------------------------------- meta architecture

# Fast R-CNN configs read their proposal boxes from a file made beforehand by another model (an RPN
# run over the dataset): the image alone does not determine the answer, so no bundle can be made.
PRECOMPUTED_PROPOSALS = ("MODEL.PROPOSAL_GENERATOR.NAME: PrecomputedProposals (MODEL.LOAD_PROPOSALS: True) is not "
                         "supported: its boxes come from a proposal file made beforehand, not from the image; use "
                         "a config with an RPN (e.g. faster_rcnn_R_50_FPN_1x.yaml)")


@META_ARCHS.register("GeneralizedRCNN")
def build_generalized_rcnn(cfg: dict) -> GeneralizedRCNN:
    m = get(cfg, "MODEL")
    _require(not m.get("LOAD_PROPOSALS"), PRECOMPUTED_PROPOSALS)
    backbone = BACKBONES.get(get(cfg, "MODEL.BACKBONE.NAME"))(cfg, len(m["PIXEL_MEAN"]))
    shapes = backbone.output_shape()
    proposals = PROPOSAL_GENERATORS.get(get(cfg, "MODEL.PROPOSAL_GENERATOR.NAME"))(cfg, shapes)
    roi_heads = ROI_HEADS.get(get(cfg, "MODEL.ROI_HEADS.NAME"))(cfg, shapes)
    _require(not m.get("KEYPOINT_ON") or getattr(roi_heads, "keypoint_on", False),
             f"keypoint heads (MODEL.KEYPOINT_ON) with MODEL.ROI_HEADS.NAME {m['ROI_HEADS']['NAME']!r} are not supported")
    return GeneralizedRCNN(backbone, proposals, roi_heads, pixel_mean=m["PIXEL_MEAN"], pixel_std=m["PIXEL_STD"])


def _load_extra_builders() -> None:
    import_all(_EXTRA_BUILDERS)


# --------------------------------------------------------------------------- spec

def class_names(cfg: dict) -> list[str]:
    """COCO's 80 names for a COCO-trained config, else class_0, class_1, ..."""
    arch = get(cfg, "MODEL.META_ARCHITECTURE")
    n = int(get(cfg, "MODEL.RETINANET.NUM_CLASSES" if arch == "RetinaNet" else "MODEL.ROI_HEADS.NUM_CLASSES"))
    datasets = list(cfg.get("DATASETS", {}).get("TRAIN", [])) + list(cfg.get("DATASETS", {}).get("TEST", []))
    if n == len(COCO_CLASSES) and datasets and all(str(d).startswith("coco") for d in datasets):
        return list(COCO_CLASSES)
    if n == 1 and datasets and all(str(d).startswith("keypoints_coco") for d in datasets):
        return ["person"]  # COCO's person keypoints: its one category
    return [f"class_{i}" for i in range(n)]


def mask_resolution(cfg: dict) -> int:
    """Side of the predicted masks: 2x the mask pooler (FPN/DC5); C4 pools 14, res5 halves, deconv doubles."""
    if get(cfg, "MODEL.ROI_HEADS.NAME") == "Res5ROIHeads":
        return int(get(cfg, "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION"))
    return 2 * int(get(cfg, "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION"))


def detection_spec(cfg: dict, size_divisibility: int, mask_on: bool, keypoint_on: bool = False) -> dict:
    """The model part of deploy.json (docs/bundle.md) for a detectron2 detector."""
    fmt = get(cfg, "INPUT.FORMAT")
    _require(fmt in ("BGR", "RGB"), f"INPUT.FORMAT {fmt!r} is not supported (BGR or RGB)")
    min_size = get(cfg, "INPUT.MIN_SIZE_TEST")
    _require(int(min_size) > 0, "INPUT.MIN_SIZE_TEST = 0 (no resize) is not supported")
    outputs = [{"name": "boxes", "shape": ["N", 4], "meaning": "x1,y1,x2,y2 in resized-image pixels"},
               {"name": "scores", "shape": ["N"]},
               {"name": "classes", "shape": ["N"], "meaning": "0-based contiguous class index"}]
    if mask_on:
        side = mask_resolution(cfg)
        outputs.append({"name": "mask_probs", "shape": ["N", side, side], "meaning": "mask probabilities in the box"})
    extra = {}
    if keypoint_on:
        k = get(cfg, "MODEL.ROI_KEYPOINT_HEAD")
        side = 4 * int(k["POOLER_RESOLUTION"])  # the deconv and the upsample each double
        outputs.append({"name": "keypoint_heatmaps", "shape": ["N", int(k["NUM_KEYPOINTS"]), side, side],
                        "meaning": "keypoint heatmap logits in the box (decoded on the host as detectron2's "
                                   "heatmaps_to_keypoints)"})
        extra["keypoints"] = keypoint_meta(int(k["NUM_KEYPOINTS"]), get(cfg, "TEST.KEYPOINT_OKS_SIGMAS"))
    return {
        **extra,
        "task": "keypoints" if keypoint_on else "instance_segmentation" if mask_on else "detection",
        "classes": class_names(cfg),
        "inputs": [{"name": "images", "dtype": "float32", "layout": "NCHW", "color": fmt,
                    "shape": [1, 3, "height", "width"]},
                   {"name": "im_info", "dtype": "float32", "shape": [1, 2],
                    "meaning": "valid (height, width) of the resized image inside the padded tensor"}],
        "preprocess": {
            "resize": {"type": "shortest_edge", "min_size": int(min_size), "max_size": int(get(cfg, "INPUT.MAX_SIZE_TEST")),
                       "interp": "pil_bilinear"},
            "pad": {"size_divisibility": int(size_divisibility)},
            "normalize": {"mean": [float(v) for v in get(cfg, "MODEL.PIXEL_MEAN")],
                          "std": [float(v) for v in get(cfg, "MODEL.PIXEL_STD")], "where": "graph"},
        },
        "postprocess": {"type": "detection", "paste": "detectron2", "mask_threshold": 0.5, "clip": True,
                        "drop_empty": True, "score_threshold": 0.0,
                        "max_detections": int(get(cfg, "TEST.DETECTIONS_PER_IMAGE"))},
        "outputs": outputs,
    }


# --------------------------------------------------------------------------- entry points

def load_weights(module, weights: Optional[str]) -> dict:
    """Load a detectron2 checkpoint (.pth or model-zoo .pkl) strictly: every model weight must be there."""
    if not weights:
        return {"weights": None, "note": "random initialisation"}
    from ..checkpoint import load_checkpoint, load_into_module
    from .checkpoint import detectron2_state_dict

    ckpt = load_checkpoint(weights)
    report = load_into_module(module, detectron2_state_dict(ckpt.state_dict, model_keys=module.state_dict().keys()))
    # BatchNorm's step counter does not affect inference; every other missing tensor is fatal.
    missing = [k for k in report.missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"{weights}: {len(missing)} weights of the model are missing, e.g. {missing[0]}")
    return {"weights": str(weights), "weights_sha256": ckpt.sha256}


def build_from_config(cfg: dict, weights: Optional[str] = None, *, source: str = "",
                      input_size: Optional[Sequence[int]] = None, **_options) -> DeployableModel:
    """DeployableModel from a merged detectron2 config dict (and optional checkpoint)."""
    _load_extra_builders()
    arch = get(cfg, "MODEL.META_ARCHITECTURE")
    _require(arch in META_ARCHS, f"MODEL.META_ARCHITECTURE {arch!r} is not supported; supported: {', '.join(META_ARCHS)}")
    module = META_ARCHS.get(arch)(cfg).eval()
    if arch in ARCH_SPECS:
        spec = ARCH_SPECS[arch](cfg, module)
    else:
        roi_heads = getattr(module, "roi_heads", None)
        spec = detection_spec(cfg, getattr(module.backbone, "size_divisibility", 0),
                              bool(getattr(roi_heads, "mask_on", False)), bool(getattr(roi_heads, "keypoint_on", False)))
    provenance = {"source": source, "framework": "detectron2", "meta_architecture": arch, **load_weights(module, weights)}
    module, size = fixed_input(module, spec, input_size)
    return DeployableModel(module, spec, provenance, batchable=False, input_size=size)


def fixed_input(module, spec: dict, input_size: Optional[Sequence[int]]):
    """(module, size) for a letterbox export at `input_size`, or (module, None) for a dynamic one."""
    if input_size is None:
        return module, None
    size = tuple(int(v) for v in input_size)
    div = spec["preprocess"]["pad"]["size_divisibility"]
    _require(len(size) == 2 and min(size) > 0, f"input_size must be (height, width), positive; got {input_size}")
    # a side that is not a multiple of the divisibility is padded in the graph (see LetterboxCrop)
    return LetterboxCrop(module, div, size, spec["preprocess"]["normalize"]["mean"]).eval(), size


def build(spec_path: str, weights: Optional[str] = None, **options) -> DeployableModel:
    """ModelSource entry point: a detectron2 YAML config (with `_BASE_` chain) and its checkpoint."""
    from .config import load_config

    from ..overrides import apply_opts

    cfg = apply_opts(load_config(spec_path), options.pop("config_overrides", ()), spec_path)
    return build_from_config(cfg, weights, source=str(Path(spec_path)), **options)
