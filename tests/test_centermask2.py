"""CenterMask2 without centermask2: VoVNet-V2 + FPN, FCOS, SAG-Mask and MaskIoU against its goldens.

Stage by stage on the golden's own resized image (so the host resize is not under test here):
pyramid features, FCOS proposals, final detections matched by IoU and class, mask probabilities
and MaskIoU-rescored mask scores. Then the whole model is exported to ONNX with dynamic height and
width and run in onnxruntime on another input size. Tests without goldens check the parts that need
no reference: VoVNet variants' checkpoint names, the ratio ROI-level rule, config claims.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vdeploy.models.centermask.center_roi_heads import assign_levels_by_ratio  # noqa: E402
from vdeploy.models.centermask.fcos import locations_of  # noqa: E402
from vdeploy.models.centermask.vovnet import VOVNET_SPECS, VoVNet  # noqa: E402

GOLDENS = Path(__file__).resolve().parents[1].parent / "shared" / "goldens"
FAMILY = GOLDENS / "centermask2"
CASE = FAMILY / "centermask_V_39_eSE_FPN_ms_3x"
CONFIG = FAMILY / "configs" / "centermask" / "centermask_V_39_eSE_FPN_ms_3x.yaml"
needs_goldens = pytest.mark.skipif(not CASE.is_dir(), reason=f"centermask2 goldens not found at {CASE}")


# --------------------------------------------------------------------------- no goldens needed

@pytest.mark.parametrize("body", sorted(VOVNET_SPECS))
def test_vovnet_variants_have_centermask2_names(body):
    spec = VOVNET_SPECS[body]
    with torch.device("meta"):  # names and shapes only: no need to initialise the weights
        keys = VoVNet(spec, ["stage5"], norm="FrozenBN").state_dict()
    assert "stem.stem_1/conv.weight" in keys and "stage2.OSA2_1.ese.fc.weight" in keys
    assert keys["stage5.OSA5_1.concat.OSA5_1_concat/conv.weight"].shape[0] == spec.stage_out_ch[3]
    if spec.depthwise:  # depthwise + pointwise units, and a 1x1 reduction where the channels change
        assert "stem.stem_2/dw_conv3x3.weight" in keys and "stem.stem_2/pw_norm.running_var" in keys
        assert "stage3.OSA3_1.conv_reduction.OSA3_1_reduction_0/conv.weight" in keys
    last = spec.block_per_stage[2]
    assert (f"stage4.OSA4_{last}.layers.0.OSA4_{last}_0/conv.weight" in keys) != spec.depthwise
    assert sum(k.endswith("ese.fc.weight") for k in keys) == sum(spec.block_per_stage)  # eSE on every block


@pytest.mark.parametrize("body", ["V-19-slim-dw-eSE", "V-39-eSE"])
def test_vovnet_strides_and_ceil_mode_pooling(body):
    spec = VOVNET_SPECS[body]
    net = VoVNet(spec, ["stage2", "stage3", "stage4", "stage5"], norm="FrozenBN")
    shapes = net.output_shape()
    assert [shapes[f"stage{i}"].stride for i in range(2, 6)] == [4, 8, 16, 32]
    # Stride-4 stem then ceil-mode 3x3/2 pools, as upstream: height 130 -> 33 -> 16 -> 8 -> 4 and
    # width 66 -> 17 -> 8 -> 4 -> 2 (floor mode would end at 3 x 1).
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 130, 66))
    assert out["stage5"].shape[-2:] == (4, 2) and out["stage5"].shape[1] == spec.stage_out_ch[3]
    assert out["stage2"].shape[1] == spec.stage_out_ch[0]


def test_ratio_assignment_follows_image_to_box_area():
    # level = ceil(5 - log2(image area / box area)) on p3..p5 of an 800 x 800 image.
    hw = torch.tensor([800.0, 800.0])
    boxes = torch.tensor([[0, 0, 400, 400], [0, 0, 800, 800], [0, 0, 10, 10], [0, 0, 800, 320]], dtype=torch.float32)
    levels = assign_levels_by_ratio(boxes, hw, 3, 5)
    # 1/4 of the image -> 3 (p3); all of it -> 5 (p5); tiny -> clamped to p3; 1/2.5 -> ceil(3.68) = 4.
    assert levels.tolist() == [0, 2, 0, 1]


def test_fcos_locations_are_cell_centres():
    loc = locations_of(torch.zeros(1, 1, 2, 3), 8)
    assert loc.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]


def test_claims_by_content(tmp_path):
    from vdeploy.frameworks.centermask2 import claims

    base = tmp_path / "base.yaml"
    base.write_text("MODEL:\n  PROPOSAL_GENERATOR:\n    NAME: FCOS\n")
    child = tmp_path / "model.yaml"
    child.write_text("_BASE_: base.yaml\nMODEL:\n  MASK_ON: true\n")
    plain = tmp_path / "rcnn.yaml"
    plain.write_text("MODEL:\n  META_ARCHITECTURE: GeneralizedRCNN\n  ROI_HEADS:\n    NAME: StandardROIHeads\n")
    assert claims(str(child)) and not claims(str(plain)) and not claims(str(tmp_path / "missing.yaml"))


# --------------------------------------------------------------------------- goldens

def _feed(bgr: np.ndarray, mean) -> tuple:
    """Host-side padding as detectron2's ImageList: bottom/right to a multiple of 32 with the mean."""
    h, w = bgr.shape[:2]
    hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
    images = torch.empty(1, 3, hp, wp)
    images[:] = torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    images[0, :, :h, :w] = torch.from_numpy(bgr.astype(np.float32)).permute(2, 0, 1)
    return images, torch.tensor([[h, w]], dtype=torch.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod((rb - lt).clip(min=0), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _match(ref_boxes, ref_classes, boxes, classes, min_iou: float) -> np.ndarray:
    """For each reference detection, the index of the unused detection of its class with the best IoU."""
    iou = _iou(ref_boxes, boxes)
    iou[ref_classes[:, None] != classes[None, :]] = -1
    out, used = [], np.zeros(len(boxes), bool)
    for i in range(len(ref_boxes)):
        j = int(np.where(used, -1, iou[i]).argmax())
        assert iou[i, j] >= min_iou, f"reference detection {i} has no match (best IoU {iou[i, j]:.4f})"
        used[j] = True
        out.append(j)
    return np.array(out)


@pytest.fixture(scope="module")
def checkpoint(module_tmp):
    if not CASE.is_dir():
        pytest.skip(f"centermask2 goldens not found at {CASE}")
    ckpt = module_tmp.mktemp("centermask2") / "model_final.pth"
    subprocess.run([sys.executable, str(GOLDENS.parent / "acceptance" / "make_ckpt.py"), str(CASE), str(ckpt)],
                   check=True, capture_output=True)
    return ckpt


@pytest.fixture(scope="module")
def stages(checkpoint):
    """The model's outputs, stage by stage, on the golden's resized astronaut image."""
    from vdeploy.frameworks.centermask2 import build

    dm = build(str(CONFIG), str(checkpoint))
    ref = np.load(CASE / "astronaut.npz")
    images, im_info = _feed(ref["resized_bgr"], dm.spec["preprocess"]["normalize"]["mean"])
    m = dm.module
    with torch.no_grad():
        feats = m.features(images)
        proposals = m.proposal_generator(feats)
        dets = m.roi_heads(feats, proposals, im_info[0])
    return dm, ref, feats, [t.numpy() for t in proposals], [t.numpy() for t in dets]


@needs_goldens
def test_spec_and_provenance(stages):
    dm = stages[0]
    assert dm.spec["task"] == "instance_segmentation" and len(dm.spec["classes"]) == 80
    assert [o["name"] for o in dm.spec["outputs"]] == ["boxes", "scores", "classes", "mask_probs", "mask_scores"]
    pre = dm.spec["preprocess"]
    assert pre["resize"]["min_size"] == 800 and pre["pad"]["size_divisibility"] == 32
    assert dm.provenance["framework"] == "centermask2" and dm.provenance["weights_sha256"]


@needs_goldens
def test_features_match(stages):
    _, ref, feats, _, _ = stages
    assert sorted(feats) == ["p3", "p4", "p5", "p6", "p7"]
    for name, f in feats.items():
        assert list(f.shape) == ref[f"feat/{name}/shape"].tolist()
        # float32 through ~40 convs: measured max error 1.4e-5 on channel means of magnitude ~4,
        # 1e-5 on spatial means; 1e-4 absolute is the README's "about 1e-4 relative" bar.
        np.testing.assert_allclose(f[0].mean(dim=(1, 2)).numpy(), ref[f"feat/{name}/mean_c"], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(f[0].mean(dim=0).numpy(), ref[f"feat/{name}/mean_hw"], atol=1e-4, rtol=1e-4)


@needs_goldens
def test_fcos_proposals_match(stages):
    _, ref, _, (boxes, scores, classes, locations), _ = stages
    assert len(boxes) == len(ref["proposals/pred_boxes"]) == 50  # POST_NMS_TOPK_TEST
    j = _match(ref["proposals/pred_boxes"], ref["proposals/pred_classes"], boxes, classes, 0.999)
    # Distances are relu(conv) * stride: measured 1e-4 px on boxes ~600 px; 1e-2 px stays far
    # below the 0.3 px shift the README says already costs AP.
    np.testing.assert_allclose(boxes[j], ref["proposals/pred_boxes"], atol=1e-2, rtol=0)
    # sqrt(class prob x centerness): measured 5e-6.
    np.testing.assert_allclose(scores[j], ref["proposals/scores"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(locations[j], ref["proposals/locations"])  # cell centres are exact


@needs_goldens
def test_detections_masks_and_mask_scores_match(stages):
    _, ref, _, _, (boxes, scores, classes, mask_probs, mask_scores) = stages
    # The golden boxes went through detector_postprocess (scaled to the original image, clipped).
    (oh, ow), (rh, rw) = ref["orig_hw"], ref["resized_hw"]
    scaled = boxes * np.array([ow / rw, oh / rh, ow / rw, oh / rh], np.float32)
    scaled[:, 0::2] = scaled[:, 0::2].clip(0, ow)
    scaled[:, 1::2] = scaled[:, 1::2].clip(0, oh)
    j = _match(ref["det/boxes"], ref["det/classes"], scaled, classes, 0.999)
    assert len(set(j.tolist())) == len(boxes)  # no extra and no missing detection
    np.testing.assert_allclose(scaled[j], ref["det/boxes"], atol=1e-2, rtol=0)
    np.testing.assert_allclose(scores[j], ref["det/scores"], atol=1e-4, rtol=0)
    # Golden masks are float16 (resolution 2^-11 ~ 4.9e-4 near 1); measured 3e-4.
    np.testing.assert_allclose(mask_probs[j], ref["det/mask_probs"].astype(np.float32), atol=1e-3, rtol=0)
    # score x MaskIoU (an unbounded linear output, |x| up to ~5 here): measured 1e-4.
    np.testing.assert_allclose(mask_scores[j], ref["det/mask_scores"], atol=1e-3, rtol=1e-3)


@needs_goldens
def test_onnx_dynamic_size_matches_torch(checkpoint, tmp_path):
    """Export traced at one size, run on another: frozen shape arithmetic would change detections."""
    ort = pytest.importorskip("onnxruntime")
    import cv2

    from vdeploy.frameworks.centermask2 import build_from_cfg, load_config
    from vdeploy.runtime.preprocess import preprocess

    cfg = load_config(CONFIG)
    cfg["INPUT"]["MIN_SIZE_TEST"] = 256  # small inputs keep export and runs fast on 2 cores
    dm = build_from_cfg(cfg, str(checkpoint))
    names = [o["name"] for o in dm.spec["outputs"]]
    trace_in = preprocess(cv2.imread(str(GOLDENS / "images" / "astronaut.png")), dm.spec).inputs  # 256 x 256
    run_in = preprocess(cv2.imread(str(GOLDENS / "images" / "coffee.png")), dm.spec).inputs      # 256 x 384
    assert trace_in["images"].shape[2:] != run_in["images"].shape[2:]
    path = tmp_path / "centermask.onnx"
    dynamic = {"images": {2: "height", 3: "width"}, **{n: {0: "N"} for n in names}}
    with torch.no_grad():
        torch.onnx.export(dm.module, (torch.from_numpy(trace_in["images"]), torch.from_numpy(trace_in["im_info"])),
                          str(path), dynamo=False, opset_version=17, input_names=["images", "im_info"],
                          output_names=names, dynamic_axes=dynamic)
        want = dict(zip(names, (t.numpy() for t in dm.module(*(torch.from_numpy(run_in[k])
                                                                 for k in ("images", "im_info"))))))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip(names, sess.run(names, run_in)))
    assert len(want["boxes"]) > 10 and len(got["boxes"]) == len(want["boxes"])
    j = _match(want["boxes"], want["classes"], got["boxes"], got["classes"], 0.999)
    # Two engines' float32 convolutions differ by ~1e-6 relative; measured 1e-4 px on boxes,
    # 5e-6 on scores, 2e-4 on mask probabilities and mask scores.
    np.testing.assert_allclose(got["boxes"][j], want["boxes"], atol=1e-2, rtol=0)
    np.testing.assert_allclose(got["scores"][j], want["scores"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["mask_probs"][j], want["mask_probs"], atol=1e-3, rtol=0)
    np.testing.assert_allclose(got["mask_scores"][j], want["mask_scores"], atol=1e-3, rtol=1e-3)


# --------------------------------------------------------------------------- other configs (random weights)

LITE_YAML = """
MODEL:
  META_ARCHITECTURE: GeneralizedRCNN
  BACKBONE: {NAME: build_fcos_vovnet_fpn_backbone, FREEZE_AT: 0}
  VOVNET: {CONV_BODY: V-19-slim-dw-eSE, OUT_FEATURES: [stage3, stage4, stage5]}
  FPN: {IN_FEATURES: [stage3, stage4, stage5], OUT_CHANNELS: 128}
  PROPOSAL_GENERATOR: {NAME: FCOS}
  FCOS: {POST_NMS_TOPK_TEST: 50, NUM_CLS_CONVS: 2, NUM_BOX_CONVS: 2, INFERENCE_TH_TEST: %s}
  MASK_ON: True
  MASKIOU_ON: True
  ROI_HEADS: {NAME: CenterROIHeads, IN_FEATURES: [p3, p4, p5]}
  ROI_MASK_HEAD: {NAME: SpatialAttentionMaskHead, ASSIGN_CRITERION: ratio, NUM_CONV: 2, CONV_DIM: 128}
  ROI_MASKIOU_HEAD: {NUM_CONV: 2, CONV_DIM: 128}
INPUT: {MIN_SIZE_TEST: 600, MAX_SIZE_TEST: 1000}
"""

RPN_VOVNET_YAML = """
MODEL:
  META_ARCHITECTURE: GeneralizedRCNN
  BACKBONE: {NAME: build_vovnet_fpn_backbone}
  VOVNET: {CONV_BODY: V-19-slim-eSE, OUT_FEATURES: [stage2, stage3, stage4, stage5]}
  FPN: {IN_FEATURES: [stage2, stage3, stage4, stage5]}
  ANCHOR_GENERATOR: {SIZES: [[32], [64], [128], [256], [512]]}
  RPN: {IN_FEATURES: [p2, p3, p4, p5, p6], PRE_NMS_TOPK_TEST: 1000, POST_NMS_TOPK_TEST: 100}
  ROI_HEADS: {NAME: StandardROIHeads, IN_FEATURES: [p2, p3, p4, p5]}
  ROI_BOX_HEAD: {NAME: FastRCNNConvFCHead, NUM_FC: 2, POOLER_RESOLUTION: 7}
  MASK_ON: True
"""


def _run_random(tmp_path, text: str):
    from vdeploy.frameworks import build_model, resolve

    path = tmp_path / "model.yaml"
    path.write_text(text)
    assert resolve(str(path)).name == "centermask2"
    torch.manual_seed(0)
    dm = build_model(str(path), None)
    images = torch.full((1, 3, 128, 160), 100.0) + torch.rand(1, 3, 128, 160) * 50
    with torch.no_grad():
        out = dm.module(images, torch.tensor([[120.0, 150.0]]))
    return dm, out


def test_lite_config_builds_and_runs(tmp_path):
    dm, out = _run_random(tmp_path, LITE_YAML % 0.05)
    assert dm.module.backbone.output_shape()["p7"].channels == 128
    assert len(out) == 5 and 0 < out[0].shape[0] == out[3].shape[0] == out[4].shape[0] <= 50
    assert out[3].shape[1:] == (28, 28)


def test_no_detection_gives_empty_outputs(tmp_path):
    _, out = _run_random(tmp_path, LITE_YAML % 1.01)  # no class probability passes the threshold
    assert [tuple(t.shape) for t in out] == [(0, 4), (0,), (0,), (0, 28, 28), (0,)]


def test_rpn_model_on_vovnet_builds_through_detectron2(tmp_path):
    dm, out = _run_random(tmp_path, RPN_VOVNET_YAML)
    assert dm.provenance["framework"] == "centermask2" and dm.provenance["meta_architecture"] == "GeneralizedRCNN"
    assert type(dm.module.backbone.bottom_up).__name__ == "VoVNet" and len(out) == 4
