"""Config edge of CascadeROIHeads: MODEL.ROI_HEADS.NAME = "CascadeROIHeads" -> module.

Imported by `build.py` (its `_EXTRA_BUILDERS`), which registers the builder below under
detectron2's name so `ROI_HEADS.get(cfg.MODEL.ROI_HEADS.NAME)` finds it. Every reading of the
config shared with the standard heads goes through build.py's `*_from_cfg` helpers.
"""
from __future__ import annotations

from ...errors import ConfigError
from ...models.detectron2.cascade import CascadeROIHeads
from ...models.detectron2.registry import ROI_HEADS, ShapeSpec
from .build import box_head_from_cfg, fast_rcnn_from_cfg, get, mask_head_from_cfg, pooler_from_cfg, same_channels


def cascade_stage_weights(cfg: dict) -> list[list[float]]:
    """One Box2BoxTransform weight quadruple per stage (ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS).

    The number of stages is the number of weight sets; IOUS (training-only matching thresholds)
    must list as many, as detectron2 requires.
    """
    c = get(cfg, "MODEL.ROI_BOX_CASCADE_HEAD")
    weights, ious = list(c["BBOX_REG_WEIGHTS"]), list(c["IOUS"])
    if not weights:
        raise ConfigError("MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS is empty: a cascade needs at least one stage")
    if len(weights) != len(ious):
        raise ConfigError(f"MODEL.ROI_BOX_CASCADE_HEAD has {len(weights)} BBOX_REG_WEIGHTS but {len(ious)} IOUS")
    if any(len(w) != 4 for w in weights):
        raise ConfigError(f"MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS must be 4 numbers per stage, got {weights}")
    return [[float(v) for v in w] for w in weights]


@ROI_HEADS.register("CascadeROIHeads")
def build_cascade_roi_heads(cfg: dict, shapes: dict[str, ShapeSpec]) -> CascadeROIHeads:
    if not get(cfg, "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG"):
        raise ConfigError("CascadeROIHeads needs MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG: True "
                          "(detectron2 supports only class-agnostic cascade regression)")
    in_features = list(get(cfg, "MODEL.ROI_HEADS.IN_FEATURES"))
    channels = same_channels(shapes, in_features, "MODEL.ROI_HEADS.IN_FEATURES")

    heads, predictors = [], []
    for weights in cascade_stage_weights(cfg):
        head = box_head_from_cfg(cfg, channels)
        heads.append(head)
        predictors.append(fast_rcnn_from_cfg(cfg, head.output_size, bbox_reg_weights=weights,
                                             cls_agnostic_bbox_reg=True))
    masks = {}
    if get(cfg, "MODEL.MASK_ON"):
        masks = {"mask_pooler": pooler_from_cfg(cfg, "ROI_MASK_HEAD", in_features, shapes),
                 "mask_head": mask_head_from_cfg(cfg, channels)}
    return CascadeROIHeads(in_features, pooler_from_cfg(cfg, "ROI_BOX_HEAD", in_features, shapes),
                           heads, predictors, **masks)
