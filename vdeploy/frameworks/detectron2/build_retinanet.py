"""Config edge of RetinaNet: MODEL.META_ARCHITECTURE = "RetinaNet" -> module.

Imported by `build.py` (its `_EXTRA_BUILDERS`); the backbone comes from the BACKBONES registry
(`build_retinanet_resnet_fpn_backbone`: FPN P3-P7, P6 from res5) and the anchors from build.py's
shared anchor reading, so this file only reads MODEL.RETINANET.
"""
from __future__ import annotations

from ...errors import ConfigError
from ...models.detectron2.box_ops import Box2BoxTransform
from ...models.detectron2.registry import BACKBONES, META_ARCHS
from ...models.detectron2.retinanet import RetinaNet, RetinaNetHead
from .build import anchor_generator_from_cfg, get, same_channels


@META_ARCHS.register("RetinaNet")
def build_retinanet(cfg: dict) -> RetinaNet:
    r = get(cfg, "MODEL.RETINANET")
    pixel_mean = get(cfg, "MODEL.PIXEL_MEAN")
    backbone = BACKBONES.get(get(cfg, "MODEL.BACKBONE.NAME"))(cfg, len(pixel_mean))
    shapes = backbone.output_shape()
    in_features = list(r["IN_FEATURES"])
    channels = same_channels(shapes, in_features, "MODEL.RETINANET.IN_FEATURES")
    if r.get("NORM", ""):
        raise ConfigError(f"MODEL.RETINANET.NORM {r['NORM']!r} is not supported (only '': no norm in the head)")
    anchors = anchor_generator_from_cfg(cfg, [shapes[f].stride for f in in_features])
    if len(set(anchors.num_anchors)) != 1:
        raise ConfigError("RetinaNet needs the same number of anchors on every level")
    weights = list(r["BBOX_REG_WEIGHTS"])
    if len(weights) != 4:
        raise ConfigError(f"MODEL.RETINANET.BBOX_REG_WEIGHTS must be 4 numbers, got {weights}")

    num_classes = int(r["NUM_CLASSES"])
    head = RetinaNetHead(in_channels=channels, num_classes=num_classes, num_anchors=anchors.num_anchors[0],
                         num_convs=int(r["NUM_CONVS"]), prior_prob=float(r["PRIOR_PROB"]))
    return RetinaNet(backbone=backbone, head=head, anchors=anchors, head_in_features=in_features,
                     num_classes=num_classes, box_transform=Box2BoxTransform(weights),
                     pixel_mean=pixel_mean, pixel_std=get(cfg, "MODEL.PIXEL_STD"),
                     score_thresh=float(r["SCORE_THRESH_TEST"]), topk_candidates=int(r["TOPK_CANDIDATES_TEST"]),
                     nms_thresh=float(r["NMS_THRESH_TEST"]),
                     max_detections=int(get(cfg, "TEST.DETECTIONS_PER_IMAGE")))
