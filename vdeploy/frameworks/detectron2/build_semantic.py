"""Config edge of the meta architectures beyond R-CNN detectors: SemanticSegmentor (semantic FPN),
PanopticFPN and ProposalNetwork (RPN only).

Imported by `build.py` (its `_EXTRA_BUILDERS`); registers the modules under detectron2's
META_ARCHITECTURE names and their deploy.json model parts in build.ARCH_SPECS. The backbone,
RPN and ROI heads come from the same registries and `*_from_cfg` readings as the detectors', and
every spec starts from `detection_spec` so that the input contract (resize, padding,
normalisation) is read in one place.
"""
from __future__ import annotations

from ...models.detectron2.coco_classes import COCO_PANOPTIC_STUFF
from ...models.detectron2.registry import BACKBONES, META_ARCHS, PROPOSAL_GENERATORS, ROI_HEADS
from ...models.detectron2.semantic import PanopticFPN, ProposalNetwork, SemanticSegmentor, SemSegFPNHead
from ...errors import ConfigError
from .build import ARCH_SPECS, PRECOMPUTED_PROPOSALS, _require, detection_spec, get, same_channels


def _backbone(cfg: dict):
    backbone = BACKBONES.get(get(cfg, "MODEL.BACKBONE.NAME"))(cfg, len(get(cfg, "MODEL.PIXEL_MEAN")))
    return backbone, backbone.output_shape()


def _pixels(cfg: dict) -> dict:
    return {"pixel_mean": get(cfg, "MODEL.PIXEL_MEAN"), "pixel_std": get(cfg, "MODEL.PIXEL_STD")}


def sem_seg_head_from_cfg(cfg: dict, shapes) -> SemSegFPNHead:
    s = get(cfg, "MODEL.SEM_SEG_HEAD")
    _require(s["NAME"] == "SemSegFPNHead", f"MODEL.SEM_SEG_HEAD.NAME {s['NAME']!r} is not supported "
             "(supported: SemSegFPNHead)")
    # detectron2 keeps the backbone outputs named in IN_FEATURES (silently skipping unknown names)
    in_features = [f for f in shapes if f in s["IN_FEATURES"]]
    channels = same_channels(shapes, in_features, "MODEL.SEM_SEG_HEAD.IN_FEATURES")
    try:
        return SemSegFPNHead({f: shapes[f].stride for f in in_features}, channels,
                             num_classes=int(s["NUM_CLASSES"]), conv_dims=int(s["CONVS_DIM"]),
                             common_stride=int(s["COMMON_STRIDE"]), norm=s["NORM"])
    except ValueError as e:
        raise ConfigError(f"MODEL.SEM_SEG_HEAD: {e}") from None


def semantic_classes(cfg: dict) -> list[str]:
    """("things",) + COCO panoptic's stuff for a COCO panoptic config with 54 classes, else class_i."""
    n = int(get(cfg, "MODEL.SEM_SEG_HEAD.NUM_CLASSES"))
    datasets = list(cfg.get("DATASETS", {}).get("TRAIN", [])) + list(cfg.get("DATASETS", {}).get("TEST", []))
    if n == len(COCO_PANOPTIC_STUFF) + 1 and datasets and all("coco" in str(d) and "panoptic" in str(d) for d in datasets):
        return ["things", *COCO_PANOPTIC_STUFF]
    return [f"class_{i}" for i in range(n)]


def _sem_seg_output(cfg: dict) -> dict:
    return {"name": "sem_seg_logits", "shape": [1, int(get(cfg, "MODEL.SEM_SEG_HEAD.NUM_CLASSES")), "height", "width"],
            "meaning": "semantic logits over the padded input (cropped to the resized image and resized to the "
                       "original on the host: detectron2's sem_seg_postprocess)"}


# --------------------------------------------------------------------------- SemanticSegmentor

@META_ARCHS.register("SemanticSegmentor")
def build_semantic_segmentor(cfg: dict) -> SemanticSegmentor:
    backbone, shapes = _backbone(cfg)
    return SemanticSegmentor(backbone, sem_seg_head_from_cfg(cfg, shapes), **_pixels(cfg))


def semantic_spec(cfg: dict, module) -> dict:
    spec = detection_spec(cfg, getattr(module.backbone, "size_divisibility", 0), False)
    spec.update(task="semantic_segmentation", classes=semantic_classes(cfg), outputs=[_sem_seg_output(cfg)],
                postprocess={"type": "semantic_segmentation", "align_corners": False})
    return spec


ARCH_SPECS["SemanticSegmentor"] = semantic_spec


# --------------------------------------------------------------------------- PanopticFPN

@META_ARCHS.register("PanopticFPN")
def build_panoptic_fpn(cfg: dict) -> PanopticFPN:
    m = get(cfg, "MODEL")
    _require(bool(m.get("MASK_ON")), "PanopticFPN without masks (MODEL.MASK_ON: False) is not supported")
    _require(not m.get("KEYPOINT_ON"), "PanopticFPN with keypoints (MODEL.KEYPOINT_ON) is not supported")
    _require(not m.get("LOAD_PROPOSALS"), PRECOMPUTED_PROPOSALS)
    backbone, shapes = _backbone(cfg)
    proposals = PROPOSAL_GENERATORS.get(get(cfg, "MODEL.PROPOSAL_GENERATOR.NAME"))(cfg, shapes)
    roi_heads = ROI_HEADS.get(get(cfg, "MODEL.ROI_HEADS.NAME"))(cfg, shapes)
    return PanopticFPN(backbone, proposals, roi_heads, sem_seg_head_from_cfg(cfg, shapes), **_pixels(cfg))


def panoptic_spec(cfg: dict, module) -> dict:
    spec = detection_spec(cfg, getattr(module.backbone, "size_divisibility", 0), True)
    c = get(cfg, "MODEL.PANOPTIC_FPN.COMBINE")
    spec["task"] = "panoptic_segmentation"
    spec["stuff_classes"] = semantic_classes(cfg)
    spec["outputs"].append(_sem_seg_output(cfg))
    # detectron2's combine_semantic_and_instance_outputs, on the pasted masks and the label map
    spec["postprocess"].update(type="panoptic", align_corners=False,
                               overlap_threshold=float(c["OVERLAP_THRESH"]),
                               stuff_area_threshold=float(c["STUFF_AREA_LIMIT"]),
                               instances_score_threshold=float(c["INSTANCES_CONFIDENCE_THRESH"]))
    return spec


ARCH_SPECS["PanopticFPN"] = panoptic_spec


# --------------------------------------------------------------------------- ProposalNetwork

@META_ARCHS.register("ProposalNetwork")
def build_proposal_network(cfg: dict) -> ProposalNetwork:
    backbone, shapes = _backbone(cfg)
    proposals = PROPOSAL_GENERATORS.get(get(cfg, "MODEL.PROPOSAL_GENERATOR.NAME"))(cfg, shapes)
    return ProposalNetwork(backbone, proposals, **_pixels(cfg))


def proposal_spec(cfg: dict, module) -> dict:
    """Proposals as class-agnostic detections of one class, "object": every stage that reads a
    detection (predict's COCO results, eval, drawing, serving, verification by box AP against
    PyTorch's proposals) reads them unchanged."""
    spec = detection_spec(cfg, getattr(module.backbone, "size_divisibility", 0), False)
    spec["classes"] = ["object"]
    spec["outputs"][1]["meaning"] = "sigmoid of the RPN objectness logit"
    spec["outputs"][2]["meaning"] = "always 0 (object)"
    spec["postprocess"]["max_detections"] = int(get(cfg, "MODEL.RPN.POST_NMS_TOPK_TEST"))
    return spec


ARCH_SPECS["ProposalNetwork"] = proposal_spec
