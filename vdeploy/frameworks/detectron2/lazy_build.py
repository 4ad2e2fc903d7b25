"""The LazyConfig edge: a config's `model` tree (plain dicts from lazyconfig.py) -> native modules.

Each detectron2 class path the tree may name maps to one builder here (`BUILDERS`, keyed by the
class name after its module: "GeneralizedRCNN", "ResNet.make_default_stages", "ViT"); a builder
reads its node's keyword arguments and passes them to the native module, the same modules the
YAML configs build (vdeploy/models/detectron2). Arguments that only training reads (matchers,
losses, sampling) are listed per class and skipped; any other argument a builder does not know is
refused, so a config is never silently built into a different model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from ...errors import ConfigError
from ...models.base import DeployableModel
from ...models.detectron2.cascade import CascadeROIHeads
from ...models.detectron2.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from ...models.detectron2.keypoint_head import KRCNNConvDeconvUpsampleHead
from ...models.detectron2.mask_head import MaskRCNNConvUpsampleHead
from ...models.detectron2.poolers import ROIPooler
from ...models.detectron2.rcnn import GeneralizedRCNN
from ...models.detectron2.regnet import RegNet
from ...models.detectron2.resnet import ResNet
from ...models.detectron2.resnet import make_stage
from ...models.detectron2.roi_heads import FastRCNNConvFCHead, FastRCNNOutputLayers, Res5ROIHeads, StandardROIHeads
from ...models.detectron2.rpn import RPN, AnchorGenerator, StandardRPNHead
from ...models.detectron2.mvit import MViT
from ...models.detectron2.swin import SwinTransformer
from ...models.detectron2.vit import ViT, SimpleFeaturePyramid
from . import lazyconfig as lc

_REQUIRED = object()
# Arguments only training reads, per class (anything else unknown is refused).
_TRAINING_ONLY = {
    "GeneralizedRCNN": {"vis_period"},
    "PanopticFPN": {"vis_period", "combine_overlap_thresh", "combine_stuff_area_thresh", "combine_instances_score_thresh"},
    "SemSegFPNHead": {"ignore_value", "loss_weight"},
    "RetinaNet": {"anchor_matcher", "focal_loss_alpha", "focal_loss_gamma", "smooth_l1_beta", "box_reg_loss_type",
                  "vis_period"},
    "FCOS": {"center_sampling_radius", "focal_loss_alpha", "focal_loss_gamma"},
    "ResNet": {"freeze_at"},
    "RegNet": {"freeze_at"},
    "RPN": {"anchor_matcher", "batch_size_per_image", "positive_fraction", "smooth_l1_beta", "loss_weight",
            "box_reg_loss_type"},
    "StandardROIHeads": {"batch_size_per_image", "positive_fraction", "proposal_matcher", "proposal_append_gt",
                         "train_on_pred_boxes"},
    "Res5ROIHeads": {"batch_size_per_image", "positive_fraction", "proposal_matcher", "proposal_append_gt"},
    "CascadeROIHeads": {"batch_size_per_image", "positive_fraction", "proposal_matchers", "proposal_append_gt",
                        "train_on_pred_boxes"},
    "FastRCNNOutputLayers": {"smooth_l1_beta", "box_reg_loss_type", "loss_weight", "use_fed_loss",
                             "get_fed_loss_cls_weights", "fed_loss_num_classes"},
    "MaskRCNNConvUpsampleHead": {"loss_weight", "vis_period"},
    "KRCNNConvDeconvUpsampleHead": {"loss_weight", "loss_normalizer"},
    "ViT": {"drop_path_rate", "use_act_checkpoint", "rel_pos_zero_init"},
    "MViT": {"drop_path_rate", "use_act_checkpoint", "rel_pos_zero_init"},
    "SwinTransformer": {"drop_path_rate", "drop_rate", "attn_drop_rate", "use_checkpoint", "frozen_stages"},
}


class Node:
    """One lazy node being built: its keyword arguments, and who asked (for messages)."""

    def __init__(self, data: dict, path: str, source: str):
        self.data, self.path, self.source = data, path, source
        self.name = lc.target_name(data)
        self.used = {"_target_"}

    def fail(self, why: str):
        raise ConfigError(f"{self.source}: {self.path} ({self.name}): {why}")

    def get(self, key: str, default: Any = _REQUIRED) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                self.fail(f"needs {key!r}")
            return default
        value = self.data[key]
        if isinstance(value, lc.Unresolved):
            self.fail(f"{key}: {value.why}")
        return value

    def child(self, key: str, default: Any = _REQUIRED):
        value = self.get(key, default)
        if value is None or value is default:
            return value
        return build_node(value, f"{self.path}.{key}", self.source)

    def child_node(self, key: str, expect: tuple[str, ...]) -> "Node":
        """A nested lazy node read as data (ShapeSpec, Box2BoxTransform, BasicStem), not built."""
        value = self.get(key)
        n = Node(value, f"{self.path}.{key}", self.source) if lc.target_name(value) else None
        if n is None or n.name not in expect:
            self.fail(f"{key} must be L({' or '.join(expect)})(...), got {_describe(value)}")
        return n

    def finish(self) -> None:
        """Refuse arguments the builder did not read and training does not explain."""
        left = set(self.data) - self.used - _TRAINING_ONLY.get(self.name, set())
        if left:
            self.fail(f"argument(s) {sorted(left)} are not supported")


def _describe(value: Any) -> str:
    name = lc.target_name(value)
    return f"L({name})" if name else type(value).__name__


def norm_of(value: Any, where: Node) -> str:
    """A norm as a name: strings as detectron2's get_norm takes them; `lambda c: NaiveSyncBatchNorm(c, ...)`
    (the new baselines' head norm) is batch norm at inference."""
    if isinstance(value, str):
        return value
    if isinstance(value, lc.Lambda) and value.called_symbol() in ("NaiveSyncBatchNorm", "SyncBatchNorm", "BatchNorm2d"):
        return "SyncBN"
    where.fail(f"norm {_describe(value)} is not supported (a name such as 'BN', 'SyncBN', 'GN', 'LN', 'FrozenBN')")


def build_node(value: Any, path: str, source: str):
    name = lc.target_name(value)
    if name is None:
        raise ConfigError(f"{source}: {path} must be L(SomeClass)(...), got {_describe(value)}")
    builder = BUILDERS.get(name)
    target = value["_target_"].path
    if builder is None or not target.startswith("detectron2."):
        raise ConfigError(f"{source}: {path}: class {target} is not supported; supported: {', '.join(sorted(BUILDERS))}")
    node = Node(value, path, source)
    try:
        module = builder(node)
    except ValueError as e:  # a native module's own argument check
        node.fail(str(e))
    node.finish()
    return module


# --------------------------------------------------------------------------- backbones

def _resnet(n: Node) -> ResNet:
    stem = n.child_node("stem", ("BasicStem",))
    stages = n.child_node("stages", ("ResNet.make_default_stages",))
    stem_norm, stage_norm = norm_of(stem.get("norm", "BN"), stem), norm_of(stages.get("norm", "BN"), stages)
    if stem_norm != stage_norm:
        n.fail(f"stem norm {stem_norm!r} differs from the stages' {stage_norm!r}; not supported")
    module = ResNet(int(stages.get("depth")), tuple(n.get("out_features")), in_channels=int(stem.get("in_channels", 3)),
                    stem_out_channels=int(stem.get("out_channels", 64)),
                    stride_in_1x1=bool(stages.get("stride_in_1x1", False)), norm=stem_norm,
                    num_groups=int(stages.get("num_groups", 1)), width_per_group=int(stages.get("width_per_group", 64)))
    stem.finish()
    stages.finish()
    return module


def _regnet(n: Node) -> RegNet:
    stem, block = n.get("stem_class"), n.get("block_class")
    if not isinstance(stem, lc.Symbol) or not isinstance(block, lc.Symbol):
        n.fail("stem_class and block_class must be classes imported from detectron2.modeling.backbone.regnet")
    if n.get("activation_class", None) is not None:
        n.fail("activation_class other than the default ReLU is not supported")
    return RegNet(stem=stem.name, stem_width=int(n.get("stem_width")), block=block.name, depth=int(n.get("depth")),
                  w_a=float(n.get("w_a")), w_0=int(n.get("w_0")), w_m=float(n.get("w_m")),
                  group_width=int(n.get("group_width")), stride=int(n.get("stride", 2)),
                  bottleneck_ratio=float(n.get("bottleneck_ratio", 1.0)), se_ratio=float(n.get("se_ratio", 0.0)),
                  norm=norm_of(n.get("norm", "BN"), n), out_features=n.get("out_features", None))


def _layer_norm_eps(n: Node, key: str) -> float:
    value = n.get(key, None)
    if value is None:
        return 1e-5  # nn.LayerNorm's default
    if isinstance(value, lc.Partial) and value.target.path.endswith("LayerNorm") and set(value.kwargs) <= {"eps"}:
        return float(value.kwargs.get("eps", 1e-5))
    if isinstance(value, lc.Symbol) and value.path.endswith("LayerNorm"):
        return 1e-5
    n.fail(f"{key} must be nn.LayerNorm or partial(nn.LayerNorm, eps=...)")


def _vit(n: Node) -> ViT:
    if n.get("residual_block_indexes", ()):
        n.fail("residual_block_indexes (conv propagation blocks) are not supported")
    act = n.get("act_layer", None)
    if act is not None and not (isinstance(act, lc.Symbol) and act.path.endswith("GELU")):
        n.fail("act_layer other than nn.GELU is not supported")
    return ViT(img_size=int(n.get("img_size", 1024)), patch_size=int(n.get("patch_size", 16)),
               in_chans=int(n.get("in_chans", 3)), embed_dim=int(n.get("embed_dim", 768)), depth=int(n.get("depth", 12)),
               num_heads=int(n.get("num_heads", 12)), mlp_ratio=float(n.get("mlp_ratio", 4.0)),
               qkv_bias=bool(n.get("qkv_bias", True)), norm_eps=_layer_norm_eps(n, "norm_layer"),
               use_abs_pos=bool(n.get("use_abs_pos", True)), use_rel_pos=bool(n.get("use_rel_pos", False)),
               window_size=int(n.get("window_size", 0)),
               window_block_indexes=[int(i) for i in n.get("window_block_indexes", ())],
               pretrain_img_size=int(n.get("pretrain_img_size", 224)),
               pretrain_use_cls_token=bool(n.get("pretrain_use_cls_token", True)),
               out_feature=str(n.get("out_feature", "last_feat")))


def _gelu_only(n: Node) -> None:
    act = n.get("act_layer", None)
    if act is not None and not (isinstance(act, lc.Symbol) and act.path.endswith("GELU")):
        n.fail("act_layer other than nn.GELU is not supported")


def _pair(value) -> tuple:
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value), int(value))


def _mvit(n: Node) -> MViT:
    _gelu_only(n)
    return MViT(img_size=int(n.get("img_size", 224)), patch_kernel=_pair(n.get("patch_kernel", (7, 7))),
                patch_stride=_pair(n.get("patch_stride", (4, 4))), patch_padding=_pair(n.get("patch_padding", (3, 3))),
                in_chans=int(n.get("in_chans", 3)), embed_dim=int(n.get("embed_dim", 96)), depth=int(n.get("depth", 16)),
                num_heads=int(n.get("num_heads", 1)),
                last_block_indexes=[int(i) for i in n.get("last_block_indexes", (0, 2, 11, 15))],
                qkv_pool_kernel=_pair(n.get("qkv_pool_kernel", (3, 3))),
                adaptive_kv_stride=int(n.get("adaptive_kv_stride", 4)),
                adaptive_window_size=int(n.get("adaptive_window_size", 56)),
                residual_pooling=bool(n.get("residual_pooling", True)), mlp_ratio=float(n.get("mlp_ratio", 4.0)),
                qkv_bias=bool(n.get("qkv_bias", True)), norm_eps=_layer_norm_eps(n, "norm_layer"),
                use_abs_pos=bool(n.get("use_abs_pos", False)), use_rel_pos=bool(n.get("use_rel_pos", True)),
                pretrain_img_size=int(n.get("pretrain_img_size", 224)),
                pretrain_use_cls_token=bool(n.get("pretrain_use_cls_token", True)),
                out_features=tuple(n.get("out_features", ("scale2", "scale3", "scale4", "scale5"))))


def _swin(n: Node) -> SwinTransformer:
    qk_scale = n.get("qk_scale", None)
    return SwinTransformer(pretrain_img_size=int(n.get("pretrain_img_size", 224)), patch_size=int(n.get("patch_size", 4)),
                           in_chans=int(n.get("in_chans", 3)), embed_dim=int(n.get("embed_dim", 96)),
                           depths=[int(d) for d in n.get("depths", (2, 2, 6, 2))],
                           num_heads=[int(h) for h in n.get("num_heads", (3, 6, 12, 24))],
                           window_size=int(n.get("window_size", 7)), mlp_ratio=float(n.get("mlp_ratio", 4.0)),
                           qkv_bias=bool(n.get("qkv_bias", True)), qk_scale=None if qk_scale is None else float(qk_scale),
                           norm_eps=_layer_norm_eps(n, "norm_layer"), ape=bool(n.get("ape", False)),
                           patch_norm=bool(n.get("patch_norm", True)),
                           out_indices=[int(i) for i in n.get("out_indices", (0, 1, 2, 3))])


def _top_block(n: Node):
    if not n.get("top_block", None):
        return None
    return n.child("top_block")


def _fpn(n: Node) -> FPN:
    module = FPN(n.child("bottom_up"), list(n.get("in_features")), int(n.get("out_channels")),
                 norm=norm_of(n.get("norm", ""), n), top_block=_top_block(n), fuse_type=n.get("fuse_type", "sum"))
    module.square_pad = int(n.get("square_pad", 0))  # every input padded to this square (LSJ)
    module.size_divisibility = max(module.square_pad, module.size_divisibility)
    return module


def _simple_feature_pyramid(n: Node) -> SimpleFeaturePyramid:
    return SimpleFeaturePyramid(n.child("net"), n.get("in_feature"), int(n.get("out_channels")),
                                [float(s) for s in n.get("scale_factors")], top_block=_top_block(n),
                                norm=norm_of(n.get("norm", "LN"), n), square_pad=int(n.get("square_pad", 0)))


def _last_level_max_pool(n: Node) -> LastLevelMaxPool:
    return LastLevelMaxPool()


def _last_level_p6p7(n: Node) -> LastLevelP6P7:
    return LastLevelP6P7(int(n.get("in_channels")), int(n.get("out_channels")), n.get("in_feature", "res5"))


# --------------------------------------------------------------------------- proposals and heads

def _weights(n: Node, key: str, default) -> list[float]:
    value = n.get(key, None)
    if value is None:
        return list(default)
    t = Node(value, f"{n.path}.{key}", n.source)
    if t.name != "Box2BoxTransform":
        n.fail(f"{key} must be L(Box2BoxTransform)(weights=...)")
    out = [float(w) for w in t.get("weights")]
    t.get("scale_clamp", None)
    t.finish()
    return out


def _test_value(n: Node, key: str, default):
    """detectron2's (train, test) pairs (pre_nms_topk=(2000, 1000)): the test one."""
    value = n.get(key, default)
    return value[1] if isinstance(value, (list, tuple)) else value


def _per_level(value, levels: int) -> list:
    """detectron2's `_broadcast_params`: a flat list is every level's; a one-item list of lists too."""
    if not isinstance(value[0], (list, tuple)):
        return [list(value)] * levels
    return [list(v) for v in value] * levels if len(value) == 1 else [list(v) for v in value]


def anchors_of(n: Node, key: str = "anchor_generator") -> AnchorGenerator:
    a = n.child_node(key, ("DefaultAnchorGenerator",))
    strides = [int(s) for s in a.get("strides")]
    anchors = AnchorGenerator(_per_level(a.get("sizes"), len(strides)), _per_level(a.get("aspect_ratios"), len(strides)),
                              strides, float(a.get("offset", 0.0)))
    a.finish()
    return anchors


def _rpn(n: Node) -> RPN:
    head = n.child("head")
    anchors = anchors_of(n)
    return RPN(list(n.get("in_features")), head, anchors, bbox_reg_weights=_weights(n, "box2box_transform", (1, 1, 1, 1)),
               nms_thresh=float(n.get("nms_thresh", 0.7)), pre_nms_topk=int(_test_value(n, "pre_nms_topk", 1000)),
               post_nms_topk=int(_test_value(n, "post_nms_topk", 1000)),
               min_box_size=float(n.get("min_box_size", 0.0)))


def _rpn_head(n: Node) -> StandardRPNHead:
    return StandardRPNHead(int(n.get("in_channels")), int(n.get("num_anchors")), box_dim=int(n.get("box_dim", 4)),
                           conv_dims=[int(d) for d in n.get("conv_dims", (-1,))])


def _shape(n: Node, key: str = "input_shape") -> Node:
    shape = n.get(key)
    s = Node(shape, f"{n.path}.{key}", n.source)
    if s.name != "ShapeSpec":
        n.fail(f"{key} must be ShapeSpec(...)")
    return s


def _pooler(n: Node) -> ROIPooler:
    return ROIPooler(int(n.get("output_size")), [float(s) for s in n.get("scales")], int(n.get("sampling_ratio")),
                     n.get("pooler_type", "ROIAlignV2"), canonical_box_size=float(n.get("canonical_box_size", 224)),
                     canonical_level=int(n.get("canonical_level", 4)))


def _box_head(n: Node) -> FastRCNNConvFCHead:
    s = _shape(n)
    return FastRCNNConvFCHead(int(s.data["channels"]), int(s.data.get("height", 7)),
                              conv_dims=[int(d) for d in n.get("conv_dims")], fc_dims=[int(d) for d in n.get("fc_dims")],
                              conv_norm=norm_of(n.get("conv_norm", ""), n))


def _box_predictor(n: Node) -> FastRCNNOutputLayers:
    s = _shape(n)
    size = int(s.data.get("channels") or 0) * int(s.data.get("width") or 1) * int(s.data.get("height") or 1)
    return FastRCNNOutputLayers(size, int(n.get("num_classes")), cls_agnostic_bbox_reg=bool(n.get("cls_agnostic_bbox_reg", False)),
                                bbox_reg_weights=_weights(n, "box2box_transform", (10, 10, 5, 5)),
                                score_thresh=float(n.get("test_score_thresh", 0.0)),
                                nms_thresh=float(n.get("test_nms_thresh", 0.5)),
                                topk_per_image=int(n.get("test_topk_per_image", 100)),
                                use_sigmoid_ce=bool(n.get("use_sigmoid_ce", False)))


def _mask_head(n: Node) -> MaskRCNNConvUpsampleHead:
    s = _shape(n)
    dims = [int(d) for d in n.get("conv_dims")]
    if not dims:
        n.fail("conv_dims must list at least the deconv's channels")
    # detectron2: every entry but the last is a 3x3 conv; the last is the deconv's width
    return MaskRCNNConvUpsampleHead(int(s.data["channels"]), conv_dims=dims[:-1], deconv_dim=dims[-1],
                                    num_classes=int(n.get("num_classes")), cls_agnostic=bool(n.get("cls_agnostic_mask", False)),
                                    conv_norm=norm_of(n.get("conv_norm", ""), n))


def _keypoint_head(n: Node) -> KRCNNConvDeconvUpsampleHead:
    s = _shape(n)
    return KRCNNConvDeconvUpsampleHead(int(s.data["channels"]), num_keypoints=int(n.get("num_keypoints")),
                                       conv_dims=[int(d) for d in n.get("conv_dims")])


def _mask_parts(n: Node, box_in: list[str]) -> dict:
    parts = {}
    if n.get("mask_head", None) is not None:
        mask_in = list(n.get("mask_in_features", box_in))
        parts = {"mask_pooler": n.child("mask_pooler"), "mask_head": n.child("mask_head")}
        if mask_in != box_in:
            parts["mask_in_features"] = mask_in
    n.get("mask_in_features", None)
    n.get("mask_pooler", None)
    return parts


def _standard_roi_heads(n: Node) -> StandardROIHeads:
    box_in = list(n.get("box_in_features"))
    parts = _mask_parts(n, box_in)
    if n.get("keypoint_head", None) is not None:
        if list(n.get("keypoint_in_features", box_in)) != box_in:
            n.fail("keypoint_in_features different from box_in_features are not supported")
        parts.update(keypoint_pooler=n.child("keypoint_pooler"), keypoint_head=n.child("keypoint_head"))
    n.get("keypoint_in_features", None)
    n.get("keypoint_pooler", None)
    n.get("num_classes")
    return StandardROIHeads(box_in, n.child("box_pooler"), n.child("box_head"), n.child("box_predictor"), **parts)


def _cascade_roi_heads(n: Node) -> CascadeROIHeads:
    box_in = list(n.get("box_in_features"))
    parts = _mask_parts(n, box_in)
    heads = [build_node(h, f"{n.path}.box_heads[{i}]", n.source) for i, h in enumerate(n.get("box_heads"))]
    predictors = [build_node(p, f"{n.path}.box_predictors[{i}]", n.source) for i, p in enumerate(n.get("box_predictors"))]
    if any(not p.cls_agnostic_bbox_reg for p in predictors if hasattr(p, "cls_agnostic_bbox_reg")):
        n.fail("cascade box predictors must be cls_agnostic_bbox_reg=True (as detectron2 requires)")
    n.get("num_classes")
    return CascadeROIHeads(box_in, n.child("box_pooler"), heads, predictors, **parts)


def _res5_roi_heads(n: Node) -> Res5ROIHeads:
    """C4 heads: the res5 stage is `L(ResNet.make_stage)(...)` of bottleneck blocks."""
    r = n.child_node("res5", ("ResNet.make_stage",))
    block = r.get("block_class")
    if not (isinstance(block, lc.Symbol) and block.name == "BottleneckBlock"):
        r.fail("block_class must be BottleneckBlock")
    strides = [int(v) for v in r.get("stride_per_block")]
    if strides[1:] != [1] * (len(strides) - 1) or len(strides) != int(r.get("num_blocks")):
        r.fail("stride_per_block must be [s, 1, 1, ...] with one entry per block")
    res5 = make_stage(len(strides), int(r.get("in_channels")), int(r.get("out_channels")), first_stride=strides[0],
                      depth=50, bottleneck_channels=int(r.get("bottleneck_channels")),
                      num_groups=int(r.get("num_groups", 1)), norm=norm_of(r.get("norm", "BN"), r),
                      stride_in_1x1=bool(r.get("stride_in_1x1", False)), dilation=int(r.get("dilation", 1)))
    r.finish()
    n.get("num_classes")
    mask_head = n.child("mask_head") if n.get("mask_head", None) is not None else None
    return Res5ROIHeads(list(n.get("in_features")), n.child("pooler"), res5, n.child("box_predictor"),
                        mask_head=mask_head)


def _sem_seg_head(n: Node):
    from ...models.detectron2.semantic import SemSegFPNHead

    shapes = n.get("input_shape")
    if not isinstance(shapes, dict) or not shapes:
        n.fail("input_shape must map feature names to ShapeSpec(stride=..., channels=...)")
    strides, channels = {}, set()
    for f, shape in shapes.items():
        s = Node(shape, f"{n.path}.input_shape.{f}", n.source)
        if s.name != "ShapeSpec":
            n.fail(f"input_shape[{f!r}] must be ShapeSpec(...)")
        strides[f] = int(s.get("stride"))
        channels.add(int(s.get("channels")))
    if len(channels) != 1:
        n.fail("input_shape channels differ")
    return SemSegFPNHead(strides, channels.pop(), num_classes=int(n.get("num_classes")),
                         conv_dims=int(n.get("conv_dims")), common_stride=int(n.get("common_stride")),
                         norm=norm_of(n.get("norm", ""), n))


def _panoptic_fpn(n: Node):
    from ...models.detectron2.semantic import PanopticFPN

    rcnn = _generalized_rcnn(n)
    if not getattr(rcnn.roi_heads, "mask_on", False):
        n.fail("PanopticFPN without a mask head is not supported")
    head = n.child("sem_seg_head")
    return PanopticFPN(rcnn.backbone, rcnn.proposal_generator, rcnn.roi_heads, head,
                       pixel_mean=[float(v) for v in n.get("pixel_mean")],
                       pixel_std=[float(v) for v in n.get("pixel_std")])


def _dense(name: str) -> Callable[[Node], Any]:
    """A builder of lazy_dense.py (RetinaNet, FCOS), imported when first used: that module reads
    nodes with this one's helpers."""
    def build(n: Node):
        from . import lazy_dense

        return getattr(lazy_dense, name)(n)
    return build


def _generalized_rcnn(n: Node) -> GeneralizedRCNN:
    fmt = n.get("input_format", "BGR")
    if fmt not in ("BGR", "RGB"):
        n.fail(f"input_format {fmt!r} is not supported (BGR or RGB)")
    return GeneralizedRCNN(n.child("backbone"), n.child("proposal_generator"), n.child("roi_heads"),
                           pixel_mean=[float(v) for v in n.get("pixel_mean")],
                           pixel_std=[float(v) for v in n.get("pixel_std")])


BUILDERS: dict[str, Callable[[Node], Any]] = {
    "GeneralizedRCNN": _generalized_rcnn,
    "RetinaNet": _dense("build_retinanet"),
    "FCOS": _dense("build_fcos"),
    "PanopticFPN": _panoptic_fpn,
    "SemSegFPNHead": _sem_seg_head,
    "ResNet": _resnet,
    "RegNet": _regnet,
    "ViT": _vit,
    "MViT": _mvit,
    "SwinTransformer": _swin,
    "FPN": _fpn,
    "SimpleFeaturePyramid": _simple_feature_pyramid,
    "LastLevelMaxPool": _last_level_max_pool,
    "LastLevelP6P7": _last_level_p6p7,
    "RPN": _rpn,
    "StandardRPNHead": _rpn_head,
    "ROIPooler": _pooler,
    "StandardROIHeads": _standard_roi_heads,
    "CascadeROIHeads": _cascade_roi_heads,
    "Res5ROIHeads": _res5_roi_heads,
    "FastRCNNConvFCHead": _box_head,
    "FastRCNNOutputLayers": _box_predictor,
    "MaskRCNNConvUpsampleHead": _mask_head,
    "KRCNNConvDeconvUpsampleHead": _keypoint_head,
}


# --------------------------------------------------------------------------- preprocessing and spec

def test_resize(names: dict, source: str) -> tuple[int, int]:
    """(short edge, max size) of the test mapper's ResizeShortestEdge (LSJ ViTDet: 1024, 1024)."""
    try:
        augs = names["dataloader"]["test"]["mapper"]["augmentations"]
    except (KeyError, TypeError):
        raise ConfigError(f"{source}: no dataloader.test.mapper.augmentations: cannot tell the test resize") from None
    for a in augs if isinstance(augs, (list, tuple)) else ():
        if lc.target_name(a) in ("ResizeShortestEdge", "T.ResizeShortestEdge"):
            short = a.get("short_edge_length")
            short = short[0] if isinstance(short, (list, tuple)) and len(short) == 1 else short
            if not isinstance(short, int):
                raise ConfigError(f"{source}: test ResizeShortestEdge short_edge_length {short!r} must be one size")
            return short, int(a.get("max_size", 10 ** 9 if a.get("max_size") is None else a["max_size"]))
    raise ConfigError(f"{source}: the test mapper has no ResizeShortestEdge; only that test resize is supported")


def yaml_view(model_cfg: dict, names: dict, module, source: str) -> dict:
    """The few YAML keys `build.detection_spec` reads, from the LazyConfig (one spec writer for both)."""
    short, max_size = test_resize(names, source)
    arch = lc.target_name(model_cfg)
    fmt = model_cfg.get("input_format", "BGR")
    try:
        datasets = names["dataloader"]["test"]["dataset"]["names"]
    except (KeyError, TypeError):
        datasets = []
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    if arch in ("RetinaNet", "FCOS"):  # one dense-detector spec (the real class is in the provenance)
        return {"INPUT": {"FORMAT": fmt, "MIN_SIZE_TEST": short, "MAX_SIZE_TEST": max_size},
                "MODEL": {"META_ARCHITECTURE": "RetinaNet", "PIXEL_MEAN": model_cfg["pixel_mean"],
                          "PIXEL_STD": model_cfg["pixel_std"], "RETINANET": {"NUM_CLASSES": int(model_cfg["num_classes"])}},
                "TEST": {"DETECTIONS_PER_IMAGE": int(model_cfg.get("max_detections_per_image", 100))},
                "DATASETS": {"TEST": datasets}}
    roi = model_cfg["roi_heads"]
    predictor = roi.get("box_predictor") or (roi.get("box_predictors") or [{}])[-1]
    mask_res = 0
    if roi.get("mask_pooler"):
        mask_res = int(roi["mask_pooler"]["output_size"])
    box_res = int((roi.get("pooler") or roi.get("box_pooler") or {}).get("output_size", 0))
    kp = {}
    if roi.get("keypoint_head"):
        kp = {"ROI_KEYPOINT_HEAD": {"POOLER_RESOLUTION": int(roi["keypoint_pooler"]["output_size"]),
                                    "NUM_KEYPOINTS": int(roi["keypoint_head"]["num_keypoints"])}}
    panoptic = {}
    if arch == "PanopticFPN":
        panoptic = {"SEM_SEG_HEAD": {"NUM_CLASSES": int(model_cfg["sem_seg_head"]["num_classes"])},
                    "PANOPTIC_FPN": {"COMBINE": {
                        "OVERLAP_THRESH": float(model_cfg.get("combine_overlap_thresh", 0.5)),
                        "STUFF_AREA_LIMIT": float(model_cfg.get("combine_stuff_area_thresh", 4096)),
                        "INSTANCES_CONFIDENCE_THRESH": float(model_cfg.get("combine_instances_score_thresh", 0.5))}}}
    return {
        "INPUT": {"FORMAT": fmt, "MIN_SIZE_TEST": short, "MAX_SIZE_TEST": max_size},
        "MODEL": {"META_ARCHITECTURE": arch, **panoptic, "PIXEL_MEAN": model_cfg["pixel_mean"],
                  "PIXEL_STD": model_cfg["pixel_std"],
                  "ROI_HEADS": {"NUM_CLASSES": int(roi["num_classes"]), "NAME": lc.target_name(roi)},
                  "ROI_MASK_HEAD": {"POOLER_RESOLUTION": mask_res}, "ROI_BOX_HEAD": {"POOLER_RESOLUTION": box_res},
                  **kp},
        "TEST": {"DETECTIONS_PER_IMAGE": int(predictor.get("test_topk_per_image", 100)),
                 "KEYPOINT_OKS_SIGMAS": []},
        "DATASETS": {"TEST": datasets},
    }


def apply_overrides(names: dict, overrides, source: str) -> None:
    """detectron2's `LazyConfig.apply_overrides`: "model.roi_heads.num_classes=3", the value read as a
    Python literal (never evaluated beyond literals) or a string; the parent key must exist."""
    from ..overrides import literal

    for key, text in overrides:
        *parents, last = key.split(".")
        node = names
        for p in parents:
            if isinstance(node, list) and p.isdigit() and int(p) < len(node):
                node = node[int(p)]
            elif isinstance(node, dict) and p in node:
                node = node[p]
            else:
                raise ConfigError(f"{source}: override {key}: {p!r} is not set")
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = literal(text)
        elif isinstance(node, dict):
            node[last] = literal(text)
        else:
            raise ConfigError(f"{source}: override {key}: {'.'.join(parents)} has no {last!r}")


def _overrides(options: dict) -> list:
    raw = options.pop("config_overrides", ()) or ()
    out = []
    for item in raw:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            out.append((str(item[0]), str(item[1])))
        elif isinstance(item, str) and "=" in item:
            k, v = item.split("=", 1)
            out.append((k, v))
        else:
            raise ConfigError(f"override {item!r}: expected key=value")
    return out


def build(spec_path: str, weights: Optional[str] = None, **options) -> DeployableModel:
    """ModelSource entry point: a detectron2 LazyConfig file whose `model` is an L(GeneralizedRCNN) or
    L(RetinaNet)."""
    from .build import detection_spec, fixed_input, load_weights

    source = str(Path(spec_path))
    names = lc.load(spec_path)
    apply_overrides(names, _overrides(options), source)
    model_cfg = names.get("model")
    if lc.target_name(model_cfg) is None:
        raise ConfigError(f"{source}: defines no `model = L(...)(...)`")
    model_cfg = lc.resolve_interpolations(model_cfg, names, source)
    arch = lc.target_name(model_cfg)
    if arch not in ("GeneralizedRCNN", "RetinaNet", "FCOS", "PanopticFPN"):
        raise ConfigError(f"{source}: model: {model_cfg['_target_'].path} is not supported; LazyConfig models "
                          "supported: GeneralizedRCNN (Mask / Faster / Cascade / Keypoint R-CNN), RetinaNet, FCOS, PanopticFPN")
    module = build_node(model_cfg, "model", source).eval()
    cfg = yaml_view(model_cfg, names, module, source)
    roi = getattr(module, "roi_heads", None)
    if arch == "PanopticFPN":
        from .build_semantic import panoptic_spec

        spec = panoptic_spec(cfg, module)
    else:
        spec = detection_spec(cfg, getattr(module.backbone, "size_divisibility", 0),
                              bool(getattr(roi, "mask_on", False)), bool(getattr(roi, "keypoint_on", False)))
    provenance = {"source": source, "framework": "detectron2", "config_format": "lazyconfig",
                  "meta_architecture": arch, **load_weights(module, weights)}
    module, size = fixed_input(module, spec, options.get("input_size"))
    return DeployableModel(module, spec, provenance, batchable=False, input_size=size)
