"""LazyConfig builders of the dense (one-stage) detectors: L(RetinaNet) and L(FCOS).

Part of lazy_build.py's BUILDERS (which imports this module when a config first names one of
them); both read the backbone, the head inputs and the test-time selection the same way.
"""
from __future__ import annotations

from ...models.detectron2.box_ops import Box2BoxTransform
from ...models.detectron2.fcos import FCOS, FCOSHead
from ...models.detectron2.retinanet import RetinaNet, RetinaNetHead
from .lazy_build import Node, _weights, anchors_of, norm_of


def _backbone_and_head(n: Node, head_class: str):
    """(backbone, head_in_features, their channels, the head node read as data)."""
    backbone = n.child("backbone")
    shapes = backbone.output_shape()
    in_features = list(n.get("head_in_features"))
    missing = [f for f in in_features if f not in shapes]
    if missing:
        n.fail(f"head_in_features {missing} are not backbone outputs {list(shapes)}")
    channels = {shapes[f].channels for f in in_features}
    if len(channels) != 1:
        n.fail("head_in_features differ in channels")
    channels = channels.pop()
    h = n.child_node("head", (head_class,))
    h.get("input_shape")
    dims = [int(d) for d in h.get("conv_dims")]
    if any(d != channels for d in dims):
        h.fail("only head convs as wide as the input are supported")
    if int(h.get("num_classes")) != int(n.get("num_classes")):
        h.fail("num_classes differs from the model's")
    return backbone, in_features, channels, h, len(dims)


def _selection(n: Node, score_thresh: float, nms_thresh: float) -> dict:
    """The test-time selection arguments both detectors take, with the class's own defaults."""
    return dict(num_classes=int(n.get("num_classes")), pixel_mean=[float(v) for v in n.get("pixel_mean")],
                pixel_std=[float(v) for v in n.get("pixel_std")],
                score_thresh=float(n.get("test_score_thresh", score_thresh)),
                topk_candidates=int(n.get("test_topk_candidates", 1000)),
                nms_thresh=float(n.get("test_nms_thresh", nms_thresh)),
                max_detections=int(n.get("max_detections_per_image", 100)))


def build_retinanet(n: Node) -> RetinaNet:
    if n.get("input_format", "BGR") not in ("BGR", "RGB"):
        n.fail("input_format must be BGR or RGB")
    backbone, in_features, channels, h, num_convs = _backbone_and_head(n, "RetinaNetHead")
    if h.get("norm", ""):
        h.fail("a head norm is not supported in RetinaNet (detectron2 keeps one BatchNorm per level there)")
    anchors = anchors_of(n)
    if len(set(anchors.num_anchors)) != 1 or anchors.num_anchors[0] != int(h.get("num_anchors")):
        h.fail(f"num_anchors must match the anchor generator's {anchors.num_anchors[0]} on every level")
    head = RetinaNetHead(in_channels=channels, num_classes=int(n.get("num_classes")),
                         num_anchors=anchors.num_anchors[0], num_convs=num_convs,
                         prior_prob=float(h.get("prior_prob", 0.01)))
    h.finish()
    return RetinaNet(backbone=backbone, head=head, anchors=anchors, head_in_features=in_features,
                     box_transform=Box2BoxTransform(_weights(n, "box2box_transform", (1, 1, 1, 1))),
                     **_selection(n, 0.05, 0.5))


def build_fcos(n: Node) -> FCOS:
    """FCOS: anchors and box decoding are fixed by the class (one stride-sized point per cell, l/t/r/b
    distances in strides); a config that sets its own box2box_transform is refused."""
    if n.get("box2box_transform", None) is not None:
        n.fail("box2box_transform other than the default (l, t, r, b distances in strides) is not supported")
    backbone, in_features, channels, h, num_convs = _backbone_and_head(n, "FCOSHead")
    norm = norm_of(h.get("norm", ""), h)
    if norm not in ("", "GN"):
        h.fail(f"head norm {norm!r} is not supported ('' or 'GN')")
    head = FCOSHead(in_channels=channels, num_classes=int(n.get("num_classes")), num_convs=num_convs,
                    prior_prob=float(h.get("prior_prob", 0.01)), norm=norm)
    h.finish()
    strides = [backbone.output_shape()[f].stride for f in in_features]
    return FCOS(backbone=backbone, head=head, head_in_features=in_features, strides=strides,
                **_selection(n, 0.2, 0.6))
