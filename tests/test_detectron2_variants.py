"""detectron2 variants without goldens: C4, DC5, ResNet-18, ResNeXt, GN; config edge and spec.

Configs are written as small YAML files in detectron2's own style and read through
`load_config` (package defaults), as a user's file would be. State-dict key names and shapes are
checked against detectron2's naming, so these models load real detectron2 checkpoints; forward
passes run on random weights at a small size.
"""
from __future__ import annotations

import textwrap

import pytest

torch = pytest.importorskip("torch")

from vdeploy.errors import ConfigError, UserError  # noqa: E402
from vdeploy.frameworks.detectron2.build import build_from_config  # noqa: E402
from vdeploy.frameworks.detectron2.config import load_config  # noqa: E402

# detectron2's Base-RCNN-C4.yaml and Base-RCNN-DilatedC5.yaml, with masks on.
C4 = """
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  MASK_ON: True
  RPN:
    PRE_NMS_TOPK_TEST: 6000
    POST_NMS_TOPK_TEST: 64  # detectron2 uses 1000; fewer boxes keep the random-weight forward fast
  ROI_HEADS:
    NAME: "Res5ROIHeads"
    SCORE_THRESH_TEST: 0.0
DATASETS:
  TRAIN: ("coco_2017_train",)
  TEST: ("coco_2017_val",)
INPUT:
  MIN_SIZE_TEST: 128
"""
DC5 = """
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  MASK_ON: True
  RESNETS:
    OUT_FEATURES: ["res5"]
    RES5_DILATION: 2
  RPN:
    IN_FEATURES: ["res5"]
    PRE_NMS_TOPK_TEST: 6000
    POST_NMS_TOPK_TEST: 64  # detectron2 uses 1000; fewer boxes keep the random-weight forward fast
  ROI_HEADS:
    NAME: "StandardROIHeads"
    IN_FEATURES: ["res5"]
    NUM_CLASSES: 3
    SCORE_THRESH_TEST: 0.0
  ROI_BOX_HEAD:
    NAME: "FastRCNNConvFCHead"
    NUM_FC: 2
    POOLER_RESOLUTION: 7
  ROI_MASK_HEAD:
    NAME: "MaskRCNNConvUpsampleHead"
    NUM_CONV: 4
    POOLER_RESOLUTION: 14
"""
FPN = """
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  BACKBONE:
    NAME: "build_resnet_fpn_backbone"
  RESNETS:
    OUT_FEATURES: ["res2", "res3", "res4", "res5"]
    DEPTH: {depth}
    RES2_OUT_CHANNELS: {res2}
    NUM_GROUPS: {groups}
    WIDTH_PER_GROUP: {width}
    STRIDE_IN_1X1: {stride_in_1x1}
    NORM: "{norm}"
  FPN:
    IN_FEATURES: ["res2", "res3", "res4", "res5"]
    NORM: "{fpn_norm}"
  ANCHOR_GENERATOR:
    SIZES: [[32], [64], [128], [256], [512]]
    ASPECT_RATIOS: [[0.5, 1.0, 2.0]]
  RPN:
    IN_FEATURES: ["p2", "p3", "p4", "p5", "p6"]
  ROI_HEADS:
    NAME: "StandardROIHeads"
    IN_FEATURES: ["p2", "p3", "p4", "p5"]
    SCORE_THRESH_TEST: 0.0
  ROI_BOX_HEAD:
    NAME: "FastRCNNConvFCHead"
    NUM_CONV: {box_convs}
    NORM: "{fpn_norm}"
    NUM_FC: 1
    POOLER_RESOLUTION: 7
    CLS_AGNOSTIC_BBOX_REG: True
"""


def _cfg(tmp_path, text: str, name: str = "model.yaml") -> dict:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_config(path)


def _shapes(dm) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in dm.module.state_dict().items()}


def _forward(dm, h: int, w: int):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in dm.module.parameters():
            p.copy_(torch.randn_like(p) * 0.02)
        images = torch.rand(1, 3, h, w) * 255
        return dm.module(images, torch.tensor([[h - 3, w - 5]], dtype=torch.float32))


def _check_detections(out, h: int, w: int, mask_side: int, num_classes: int):
    boxes, scores, classes = out[:3]
    assert boxes.shape[1] == 4 and len(boxes) == len(scores) == len(classes) > 0
    assert classes.dtype == torch.int64 and 0 <= int(classes.min()) and int(classes.max()) < num_classes
    assert bool((scores[:-1] >= scores[1:]).all()), "detections are sorted by score"
    assert bool((boxes[:, [0, 2]] <= w - 5).all() and (boxes[:, [1, 3]] <= h - 3).all()), "clipped to im_info"
    assert out[3].shape == (len(boxes), mask_side, mask_side)
    assert bool(((out[3] >= 0) & (out[3] <= 1)).all())


def test_c4_names_shapes_and_forward(tmp_path):
    dm = build_from_config(_cfg(tmp_path, C4))
    sd = _shapes(dm)
    assert sd["backbone.stem.conv1.weight"] == (64, 3, 7, 7)
    assert sd["backbone.res4.5.conv3.norm.running_var"] == (1024,)
    assert not any(k.startswith("backbone.res5") for k in sd), "C4's res5 runs per box in the ROI heads"
    assert sd["roi_heads.res5.0.shortcut.weight"] == (2048, 1024, 1, 1)
    assert sd["roi_heads.res5.0.conv1.weight"] == (512, 1024, 1, 1)  # STRIDE_IN_1X1: stride on this one
    assert dm.module.roi_heads.res5[0].conv1.stride == (2, 2)
    assert sd["roi_heads.box_predictor.cls_score.weight"] == (81, 2048)
    assert sd["roi_heads.box_predictor.bbox_pred.weight"] == (320, 2048)
    assert sd["roi_heads.mask_head.deconv.weight"] == (2048, 256, 2, 2)
    assert sd["roi_heads.mask_head.predictor.weight"] == (80, 256, 1, 1)
    assert sd["proposal_generator.rpn_head.conv.weight"] == (1024, 1024, 3, 3)
    assert sd["proposal_generator.rpn_head.objectness_logits.weight"] == (15, 1024, 1, 1)
    assert sd["proposal_generator.rpn_head.anchor_deltas.weight"] == (60, 1024, 1, 1)
    # detectron2 semantics: a plain ResNet has no size divisibility, C4 masks are 14 x 14.
    assert dm.spec["preprocess"]["pad"]["size_divisibility"] == 0
    assert dm.spec["outputs"][3]["shape"] == ["N", 14, 14]
    assert dm.spec["task"] == "instance_segmentation" and dm.spec["classes"][0] == "person"
    _check_detections(_forward(dm, 133, 150), 133, 150, 14, 80)


def test_dc5_names_shapes_and_forward(tmp_path):
    dm = build_from_config(_cfg(tmp_path, DC5))
    sd = _shapes(dm)
    res5 = dm.module.backbone.res5
    assert res5[0].conv2.dilation == (2, 2) and res5[0].conv2.padding == (2, 2)
    assert res5[0].conv1.stride == (1, 1) and res5[0].shortcut.stride == (1, 1)
    assert dm.module.backbone.output_shape()["res5"].stride == 16
    assert sd["roi_heads.box_head.fc1.weight"] == (1024, 2048 * 7 * 7)
    assert sd["roi_heads.mask_head.mask_fcn1.weight"] == (256, 2048, 3, 3)
    assert sd["roi_heads.box_predictor.cls_score.weight"] == (4, 1024)
    assert dm.spec["classes"] == ["class_0", "class_1", "class_2"]
    assert dm.spec["outputs"][3]["shape"] == ["N", 28, 28]
    _check_detections(_forward(dm, 96, 128), 96, 128, 28, 3)


@pytest.mark.parametrize("depth,res2,groups,width,stride_in_1x1,norm,fpn_norm,box_convs,expect", [
    # ResNet-18: BasicBlocks, no shortcut in res2 (64 -> 64), 64..512 channels into the FPN.
    (18, 64, 1, 64, True, "BN", "", 0,
     {"backbone.bottom_up.res2.0.conv2.weight": (64, 64, 3, 3), "backbone.bottom_up.res3.0.shortcut.weight": (128, 64, 1, 1),
      "backbone.fpn_lateral5.weight": (256, 512, 1, 1), "backbone.fpn_lateral2.bias": (256,)}),
    # ResNeXt-101 32x8d (torchvision layout: stride on the 3x3), GN everywhere in the FPN and box head.
    (101, 256, 32, 8, False, "GN", "GN", 2,
     {"backbone.bottom_up.res2.0.conv2.weight": (256, 8, 3, 3), "backbone.bottom_up.res4.22.conv3.weight": (1024, 1024, 1, 1),
      "backbone.fpn_lateral2.norm.weight": (256,), "roi_heads.box_head.conv2.norm.bias": (256,),
      "roi_heads.box_predictor.bbox_pred.weight": (4, 1024)}),
])
def test_fpn_variants(tmp_path, depth, res2, groups, width, stride_in_1x1, norm, fpn_norm, box_convs, expect):
    text = FPN.format(depth=depth, res2=res2, groups=groups, width=width, stride_in_1x1=stride_in_1x1, norm=norm,
                      fpn_norm=fpn_norm, box_convs=box_convs)
    dm = build_from_config(_cfg(tmp_path, text))
    sd = _shapes(dm)
    for key, shape in expect.items():
        assert sd.get(key) == shape, key
    if fpn_norm:
        assert "backbone.fpn_lateral2.bias" not in sd, "a normalised conv has no bias"
    if not stride_in_1x1:
        assert dm.module.backbone.bottom_up.res3[0].conv2.stride == (2, 2)
    assert dm.spec["task"] == "detection" and len(dm.spec["outputs"]) == 3
    assert dm.spec["preprocess"]["pad"]["size_divisibility"] == 32
    if depth == 18:  # the deep one is only checked for names, to keep the suite fast
        out = _forward(dm, 128, 160)
        assert out[0].shape[1] == 4 and len(out) == 3 and len(out[0]) > 0


def test_input_size_recorded_and_checked(tmp_path):
    cfg = _cfg(tmp_path, FPN.format(depth=18, res2=64, groups=1, width=64, stride_in_1x1=True, norm="FrozenBN",
                                    fpn_norm="", box_convs=0))
    assert build_from_config(cfg, input_size=(640, 800)).input_size == (640, 800)
    with pytest.raises(ConfigError, match="positive"):
        build_from_config(cfg, input_size=(0, 800))


def test_a_canvas_of_any_size_gives_the_detections_of_the_image_alone(tmp_path):
    # 1125 is no multiple of 32: the graph pads the canvas to 1152 with the pixel mean, as
    # detectron2's ImageList pads the normalised image with zeros
    cfg = _cfg(tmp_path, FPN.format(depth=18, res2=64, groups=1, width=64, stride_in_1x1=True, norm="FrozenBN",
                                    fpn_norm="", box_convs=0))
    dyn = build_from_config(cfg)
    fixed = build_from_config(cfg, input_size=(200, 1125))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in dyn.module.parameters():
            p.copy_(torch.randn_like(p) * 0.02)
        fixed.module.detector.load_state_dict(dyn.module.state_dict())
        image = torch.rand(1, 3, 190, 1125) * 255
        mean = torch.tensor(dyn.spec["preprocess"]["normalize"]["mean"]).reshape(1, 3, 1, 1)
        canvas = mean.expand(1, 3, 200, 1125).clone()
        canvas[:, :, :190] = image
        padded = mean.expand(1, 3, 192, 1152).clone()
        padded[:, :, :190, :1125] = image
        im_info = torch.tensor([[190.0, 1125.0]])
        want, got = dyn.module(padded, im_info), fixed.module(canvas, im_info)
    assert len(want[0]) > 0
    for a, b in zip(want, got):
        torch.testing.assert_close(b, a)


def test_unsupported_config_is_a_user_error(tmp_path):
    cfg = _cfg(tmp_path, C4)
    cfg["MODEL"]["KEYPOINT_ON"] = True
    with pytest.raises(UserError, match="KEYPOINT_ON"):
        build_from_config(cfg)
    cfg["MODEL"]["KEYPOINT_ON"] = False
    cfg["MODEL"]["ROI_HEADS"]["NAME"] = "NoSuchHeads"
    with pytest.raises(UserError, match="NoSuchHeads"):
        build_from_config(cfg)


def test_claims(tmp_path):
    from vdeploy.frameworks import resolve

    (tmp_path / "c4.yaml").write_text(textwrap.dedent(C4))
    assert resolve(str(tmp_path / "c4.yaml")).name == "detectron2"
    # Same content under a .py name, and an unrelated YAML, are not detectron2 configs.
    from vdeploy.frameworks.detectron2 import _claims

    (tmp_path / "c4.py").write_text(textwrap.dedent(C4))
    assert not _claims(str(tmp_path / "c4.py"))
    (tmp_path / "other.yaml").write_text("train:\n  epochs: 3\n")
    assert not _claims(str(tmp_path / "other.yaml"))
    (tmp_path / "fcos.yaml").write_text(textwrap.dedent(C4).replace("RPN:", "PROPOSAL_GENERATOR:\n    NAME: FCOS\n  RPN:"))
    assert not _claims(str(tmp_path / "fcos.yaml"))
