"""CenterMask2's other zoo models, built from centermask2's own configs: CenterMask-Lite on
MobileNetV2, deformable VoVNets and panoptic CenterMask (parameter names, outputs, spec).
Against centermask2's detections: tests/test_deformable.py (tests/data/references)."""
from __future__ import annotations

import pytest

from conftest import SHARED

torch = pytest.importorskip("torch")

ZOO = SHARED / "zoo" / "centermask2" / "centermask"


def _build(name):
    from vdeploy.frameworks import build_model

    path = ZOO / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (the zoo configs live outside the repository)")
    return build_model(str(path))


def test_lite_mobilenetv2_has_centermask2_names_and_strides():
    dm = _build("centermask_lite_Mv2_FPN_ms_4x.yaml")
    keys = dm.module.state_dict()
    # features.0 is the stem conv_bn; block 1 has no expansion conv; the last block (17) is 320 wide
    assert keys["backbone.bottom_up.features.0.0.weight"].shape == (32, 3, 3, 3)
    assert keys["backbone.bottom_up.features.1.conv.0.weight"].shape == (32, 1, 3, 3)
    assert keys["backbone.bottom_up.features.17.conv.6.weight"].shape == (320, 960, 1, 1)
    assert "backbone.bottom_up.features.17.conv.7.running_var" in keys  # frozen BN as buffers
    shapes = dm.module.backbone.bottom_up.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {"res3": (32, 8), "res4": (96, 16),
                                                                     "res5": (320, 32)}


def test_dcn_vovnet_is_deformable_where_the_config_says():
    dm = _build("centermask_V_39_eSE_dcn_FPN_ms_3x.yaml")
    keys = dm.module.state_dict()
    stage3 = "backbone.bottom_up.stage3.OSA3_1.layers.0."
    assert keys[stage3 + "OSA3_1_0/conv_offset.weight"].shape == (27, 256, 3, 3)  # modulated: 27 channels
    assert stage3 + "OSA3_1_0/conv.weight" in keys and stage3 + "OSA3_1_0/norm.running_var" in keys
    assert not any("conv_offset" in k for k in keys if ".stage2." in k)  # STAGE_WITH_DCN: (False, True, True, True)


def test_panoptic_centermask_adds_the_semantic_output_after_centermasks():
    dm = _build("panoptic_centermask_V_39_eSE_FPN_ms_3x.yaml")
    spec = dm.spec
    assert spec["task"] == "panoptic_segmentation" and spec["postprocess"]["type"] == "panoptic"
    names = [o["name"] for o in spec["outputs"]]
    assert names[-1] == "sem_seg_logits" and names[:4] == ["boxes", "scores", "classes", "mask_probs"]
    assert spec["stuff_classes"][0] == "things" and len(spec["stuff_classes"]) == 54
    h, w = 320, 448
    x = torch.rand(1, 3, h, w) * 255
    with torch.no_grad():
        out = dm.module(x, torch.tensor([[h, w]]))
    assert len(out) == len(names) and out[-1].shape[:2] == (1, 54)
