"""detectron2 LazyConfig files: read as data (never run), built into the native models.

- the reader refuses what would need running Python (an `import os`, a call that is not a model
  constructor, an import reaching outside the config tree), and nothing in the refused file runs;
- what the zoo's configs do (relative imports, model_zoo.get_config, interpolations, comprehensions,
  `pop`/`update`, a `def` of a schedule, `for` loops) reads as detectron2 reads it;
- every LazyConfig of the shared zoo builds or is refused with a one-line UserError;
- RegNet, ViTDet, MViTv2, Swin, RetinaNet, FCOS and PanopticFPN agree with the real detectron2
  (reference files in tests/data/references/detectron2_lazy, made by
  scripts/references/make_d2_lazy_references.py; VDEPLOY_D2_LAZY_REFS may point elsewhere).
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vdeploy.errors import ConfigError, UserError  # noqa: E402
from vdeploy.frameworks import build_model, resolve  # noqa: E402
from vdeploy.frameworks.detectron2 import lazyconfig as lc  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ZOO = SHARED / "zoo"
D2_ZOO, PROJECTS = ZOO / "detectron2", ZOO / "detectron2-projects"
REFS = Path(os.environ.get("VDEPLOY_D2_LAZY_REFS", Path(__file__).parent / "data" / "references" / "detectron2_lazy"))
needs_zoo = pytest.mark.skipif(not D2_ZOO.is_dir(), reason=f"detectron2 zoo configs not found at {D2_ZOO}")


def _lazy_configs() -> list[Path]:
    return sorted(p for root in (D2_ZOO, PROJECTS) if root.is_dir() for p in root.rglob("*.py")
                  if "common" not in p.parts)


# --------------------------------------------------------------------------- refusals

@pytest.fixture
def tree(tmp_path):
    """A config tree: common/models/mask_rcnn_fpn.py (the zoo's) and a folder for test configs."""
    if not D2_ZOO.is_dir():
        pytest.skip(f"detectron2 zoo configs not found at {D2_ZOO}")
    root = tmp_path / "configs"
    shutil.copytree(D2_ZOO / "common", root / "common")
    (root / "mine").mkdir()
    return root


def _write(root: Path, text: str, name: str = "cfg.py") -> Path:
    path = root / "mine" / name
    path.write_text(text)
    return path


HEADER = "from ..common.models.mask_rcnn_fpn import model\n"


@pytest.mark.parametrize("body,words", [
    ("import os\nos.system('touch {mark}')\n", ["import of 'os'", ":2:"]),
    ("from detectron2.utils.file_io import PathManager\nPathManager.open('{mark}', 'w')\n",
     ["PathManager.open", "not a known constructor", ":3:"]),
    ("x = open('{mark}', 'w')\n", ["'open'", ":2:"]),
    ("f = lambda: 0\nx = f()\n", ["calling 'f'", ":3:"]),
    ("model.x = __import__('os').system('touch {mark}')\n", ["'__import__'", ":2:"]),
    ("class A:\n    pass\n", ["class definition", ":2:"]),
    ("while True:\n    pass\n", ["while loop", ":2:"]),
    ("def f():\n    open('{mark}', 'w')\nf()\n", ["'open'", ":3:"]),
    ("from ....outside import model\n", ["outside the config tree"]),
    ("from detectron2 import model_zoo\nm = model_zoo.get_config('../../outside.py')\n", ["get_config"]),
    ("model.roi_heads.num_classes = model.__class__\n", ["'__class__'"]),
    ("x = [0] * 10 ** 9\n", ["too large"]),
    ("l = [0]\n" + "l = [l, l]\n" * 40 + "model.roi_heads.extra = l\n", ["too large"]),
    ("l = []\nl.append(l)\nmodel.roi_heads.box_head.conv_dims = l\n", ["nested too deeply"]),
])
def test_refused_and_nothing_runs(tree, body, words):
    mark = tree.parent / "MARK"
    (tree.parent / "outside.py").write_text("model = 1\n")
    path = _write(tree, HEADER + body.format(mark=mark))
    assert resolve(str(path)).name == "detectron2-lazyconfig"
    with pytest.raises(UserError) as e:
        build_model(str(path))
    msg = str(e.value)
    assert isinstance(e.value, ConfigError) and "\n" not in msg
    assert str(path) in msg or "outside" in msg, msg
    for w in words:
        assert w in msg, msg
    assert not mark.exists()


def test_deep_expression_is_refused_not_crashed(tree):
    path = _write(tree, HEADER + "x = " + "-" * 200000 + "1\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        lc.load(path)
    from vdeploy.frameworks.detectron2.lazy_source import claims

    assert not claims(str(path))  # unreadable: not claimed, and the claim check itself does not crash


def test_refused_before_anything_is_read(tree):
    """The imports of the whole file are checked first: a bad one at the end still refuses the file
    before the imports above it are followed."""
    path = _write(tree, "from ..common.models.does_not_exist import model\nimport subprocess\n")
    with pytest.raises(ConfigError, match="does_not_exist"):
        lc.load(path)


def test_unknown_class_in_model_is_refused(tree):
    path = _write(tree, HEADER + "from detectron2.config import LazyCall as L\n"
                  "from somewhere_else import Net\n")
    with pytest.raises(ConfigError, match="import of 'somewhere_else'"):
        build_model(str(path))
    path = _write(tree, HEADER + "from detectron2.config import LazyCall as L\n"
                  "from detectron2.modeling.backbone import EfficientNet\n"
                  "model.backbone.bottom_up = L(EfficientNet)(depth=3)\n", "unknown.py")
    with pytest.raises(ConfigError, match=r"model.backbone.bottom_up: class detectron2.modeling.backbone.EfficientNet is not supported"):
        build_model(str(path))


def test_unknown_inference_argument_is_refused_not_ignored(tree):
    path = _write(tree, HEADER + "model.roi_heads.box_head.dropout = 0.5\n")
    with pytest.raises(ConfigError, match=r"box_head \(FastRCNNConvFCHead\): argument\(s\) \['dropout'\]"):
        build_model(str(path))


# --------------------------------------------------------------------------- reading

@needs_zoo
def test_cascade_reads_as_detectron2_does():
    names = lc.load(PROJECTS / "ViTDet/configs/LVIS/cascade_mask_rcnn_vitdet_b_100ep.py")
    model = lc.resolve_interpolations(names["model"], names, "x")
    roi = model["roi_heads"]
    assert lc.target_name(roi) == "CascadeROIHeads" and "box_head" not in roi and "box_predictor" not in roi
    assert roi["num_classes"] == 1203
    preds = roi["box_predictors"]
    assert [p["box2box_transform"]["weights"] for p in preds] == [(10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)]
    assert {p["num_classes"] for p in preds} == {1203}  # "${...num_classes}" through the list
    assert {p["test_score_thresh"] for p in preds} == {0.02}  # the file's `for i in range(3)` loop
    assert model["backbone"]["in_feature"] == "last_feat"  # "${.net.out_feature}"
    assert model["backbone"]["net"]["window_block_indexes"] == [0, 1, 3, 4, 6, 7, 9, 10]
    # the training parts are read as data
    assert names["train"]["max_iter"] == 156250 and names["dataloader"]["test"]["dataset"]["names"] == "lvis_v1_val"


@needs_zoo
def test_schedule_function_and_deletions():
    names = lc.load(D2_ZOO / "COCO-Detection/fcos_R_50_FPN_1x.py")
    assert names["lr_multiplier"]["scheduler"]["milestones"] == [60000, 80000, 90000]  # def default_X_scheduler
    model = names["model"]
    assert lc.target_name(model) == "FCOS" and "anchor_generator" not in model  # `del model.anchor_generator`
    assert "num_anchors" not in model["head"]


@needs_zoo
def test_mmseg_configs_stay_with_mmseg():
    from vdeploy.frameworks.detectron2.lazy_source import claims

    mmseg = sorted(p for p in (ZOO / "mmseg").rglob("*.py") if "_base_" not in p.parts)[:60]
    if not mmseg:
        pytest.skip("no mmseg zoo")
    assert not [p for p in mmseg if claims(str(p))]
    assert {resolve(str(p)).name for p in mmseg} == {"mmseg"}


@needs_zoo
@pytest.mark.parametrize("config,words", [
    ("Misc/torchvision_imagenet_R_50.py", ["L(ClassificationNet)", "class written in this config file (line 49)",
                                           "torchvision:resnet50", "torchvision_imagenet_R_50.py:126:"]),
    ("Misc/mmdet_mask_rcnn_R_50_FPN_1x.py", ["MMDetDetector is not supported"]),
])
def test_zoo_configs_refused_with_the_reason(config, words):
    with pytest.raises(ConfigError) as e:
        build_model(str(D2_ZOO / config))
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_class_written_in_the_config_is_named_and_never_run(tree):
    mark = tree.parent / "MARK"
    path = _write(tree, "from detectron2.config import LazyCall as L\n"
                        f"class Net:\n    open({str(mark)!r}, 'w')\n"
                        "model = L(Net)(depth=3)\n")
    with pytest.raises(ConfigError, match=r"cfg.py:4: model is L\(Net\)\(...\), and Net is a class written in this "
                                          r"config file \(line 2\)"):
        build_model(str(path))
    assert not mark.exists()


# --------------------------------------------------------------------------- the zoo

ZOO_LIGHT = [p for p in _lazy_configs() if not any(t in p.name for t in ("_h_", "_l_", "_mvitv2_b", "_swin_"))]


@needs_zoo
@pytest.mark.parametrize("config", ZOO_LIGHT, ids=lambda p: p.stem)
def test_zoo_config_builds_or_is_refused_clearly(config):
    try:
        dm = build_model(str(config))
    except UserError as e:
        msg = str(e)
        assert "\n" not in msg and ".py" in msg, msg
        return
    spec = dm.spec
    assert spec["task"] in ("instance_segmentation", "detection", "keypoints", "panoptic_segmentation")
    if "vitdet" in config.name:  # LSJ: resize to 1024, pad square 1024
        assert spec["preprocess"]["resize"]["min_size"] == spec["preprocess"]["resize"]["max_size"] == 1024
        assert spec["preprocess"]["pad"]["size_divisibility"] == 1024
        assert spec["inputs"][0]["color"] == "RGB"


@needs_zoo
@pytest.mark.parametrize("config,expected", [
    ("new_baselines/mask_rcnn_regnetx_4gf_dds_FPN_100ep_LSJ.py", "RegNet"),
    ("new_baselines/mask_rcnn_regnety_4gf_dds_FPN_400ep_LSJ.py", "RegNet"),
    ("new_baselines/mask_rcnn_R_101_FPN_200ep_LSJ.py", "ResNet"),
    ("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.py", "ResNet"),
    ("COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.py", "ResNet"),
])
def test_zoo_builds(config, expected):
    dm = build_model(str(D2_ZOO / config))
    bottom_up = getattr(dm.module.backbone, "bottom_up", dm.module.backbone)
    assert type(bottom_up).__name__ == expected
    assert dm.provenance["config_format"] == "lazyconfig"


# --------------------------------------------------------------------------- against detectron2

def _reference(name: str):
    path = REFS / f"{name}.npz"
    assert path.is_file(), f"no reference {path}: make it with scripts/references/make_d2_lazy_references.py"
    return np.load(path)


def _resized(ref) -> np.ndarray:
    """The resized input image (HWC uint8, the config's colour order), kept as PNG bytes."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(ref["resized_png"].tobytes())))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def _overrides(ref) -> list[tuple[str, str]]:
    return [tuple(o.split("=", 1)) for o in json.loads(str(ref["overrides"]))]


def _checkpoint(ref, tmp_path) -> Path:
    sys.path.insert(0, str(SHARED / "goldens"))
    from weights import golden_state_dict

    sd = golden_state_dict([(k, s) for k, s in json.loads(str(ref["manifest"]))])
    sd.update({k[len("bn_stats/"):]: ref[k].astype(np.float32) for k in ref.files if k.startswith("bn_stats/")})
    path = tmp_path / "model.pth"
    torch.save({"model": {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}}, path)
    return path


@pytest.mark.parametrize("name,config", [
    ("mask_rcnn_regnetx_4gf_dds_FPN_100ep_LSJ", D2_ZOO / "new_baselines/mask_rcnn_regnetx_4gf_dds_FPN_100ep_LSJ.py"),
    ("mask_rcnn_vitdet_b_100ep", PROJECTS / "ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py"),
    ("cascade_mask_rcnn_mvitv2_t_3x", PROJECTS / "MViTv2/configs/cascade_mask_rcnn_mvitv2_t_3x.py"),
    ("cascade_mask_rcnn_swin_b_in21k_50ep", PROJECTS / "ViTDet/configs/COCO/cascade_mask_rcnn_swin_b_in21k_50ep.py"),
    ("retinanet_R_50_FPN_1x", D2_ZOO / "COCO-Detection/retinanet_R_50_FPN_1x.py"),
    ("fcos_R_50_FPN_1x", D2_ZOO / "COCO-Detection/fcos_R_50_FPN_1x.py"),
    ("panoptic_fpn_R_50_1x", D2_ZOO / "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.py"),
])
@needs_zoo
def test_matches_detectron2(name, config, tmp_path):
    ref = _reference(name)
    dm = build_model(str(config), str(_checkpoint(ref, tmp_path)), config_overrides=_overrides(ref))
    spec = dm.spec
    resized = _resized(ref).astype(np.float32)
    h, w = resized.shape[:2]
    div = max(spec["preprocess"]["pad"]["size_divisibility"], 1)
    hp, wp = -(-h // div) * div, -(-w // div) * div
    images = np.empty((1, 3, hp, wp), np.float32)
    images[:] = np.asarray(spec["preprocess"]["normalize"]["mean"], np.float32)[None, :, None, None]
    images[0, :, :h, :w] = resized.transpose(2, 0, 1)
    x, im_info = torch.from_numpy(images), torch.tensor([[h, w]], dtype=torch.float32)
    model = dm.module
    with torch.no_grad():
        mean = torch.tensor(spec["preprocess"]["normalize"]["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(spec["preprocess"]["normalize"]["std"]).view(1, -1, 1, 1)
        feats = model.backbone((x - mean) / std)
        outputs = [t.numpy() for t in model(x, im_info)]
    boxes, scores, classes = outputs[:3]
    for k in ref.files:  # stage by stage: the smallest levels whole, the others' channel means
        if k.startswith("feature_mean_"):
            want, got = ref[k], feats[k[len("feature_mean_"):]].mean(dim=1).numpy()
        elif k.startswith("feature_"):
            want, got = ref[k], feats[k[len("feature_"):]].numpy()
        else:
            continue
        assert got.shape == want.shape, (k, got.shape, want.shape)
        assert np.abs(got - want).max() <= 1e-3 * max(np.abs(want).max(), 1.0), k
    assert any(k.startswith("feature_") for k in ref.files)
    assert len(ref["scores"]) > 0, "the reference has no detections: nothing to compare"
    assert len(scores) == len(ref["scores"])
    # pair each reference detection with the native one of its class that overlaps it most: two
    # near-equal scores may come out in either order (float32 sums in another order)
    iou = _iou(ref["boxes"], boxes) * (ref["classes"][:, None] == classes[None, :])
    best = iou.argmax(1)
    matched = iou[np.arange(len(best)), best] > 0.99
    assert matched.mean() >= 0.99, f"{(~matched).sum()} of {len(matched)} reference detections unmatched"
    np.testing.assert_allclose(scores[best][matched], ref["scores"][matched], atol=1e-3)
    np.testing.assert_allclose(boxes[best][matched], ref["boxes"][matched], atol=2e-2)
    if len(outputs) > 3:  # boxes a few 1e-3 px apart sample ROIAlign a little apart: bounded, rare differences
        # the reference keeps float16 probabilities: round ours the same way, so equal values compare equal
        got = outputs[3][best][matched].astype(np.float16).astype(np.float32)
        diff = np.abs(got - ref["mask_probs"][matched].astype(np.float32))
        assert diff.max() < 2e-2 and diff.mean() < 1e-4, (diff.max(), diff.mean())
    if "sem_seg_index" in ref.files:  # PanopticFPN's semantic logits over the padded input, at sampled pixels
        sem = outputs[4][0]
        want = ref["sem_seg_logits"]
        assert sem.shape[0] == want.shape[0]
        got = sem.reshape(sem.shape[0], -1)[:, ref["sem_seg_index"]]
        np.testing.assert_allclose(got, want, atol=1e-3 * max(np.abs(want).max(), 1.0))


# --------------------------------------------------------------------------- export

SHORT, MAX = "dataloader.test.mapper.augmentations.0.short_edge_length", "dataloader.test.mapper.augmentations.0.max_size"
MVIT_SMALL = ["model.backbone.bottom_up.depth", "4", "model.backbone.bottom_up.last_block_indexes", "[0,1,2,3]",
              "model.roi_heads.box_predictors.2.test_score_thresh", "0.0"]
# config, input size, overrides (small inputs and networks, a zero score threshold), task; MViTv2's
# export is test_mvitv2_dynamic_export_verifies_at_other_sizes
EXPORTS = {
    "regnetx": (D2_ZOO / "new_baselines/mask_rcnn_regnetx_4gf_dds_FPN_100ep_LSJ.py", "320x320",
                [SHORT, "320", "model.roi_heads.box_predictor.test_score_thresh", "0.0"], "instance_segmentation"),
    "vitdet": (PROJECTS / "ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py", "256x256",
               ["model.backbone.square_pad", "256", "model.backbone.net.depth", "4",
                "model.backbone.net.window_block_indexes", "[0,2]",
                "model.roi_heads.box_predictor.test_score_thresh", "0.0"], "instance_segmentation"),
    "fcos": (D2_ZOO / "COCO-Detection/fcos_R_50_FPN_1x.py", "256x256",
             [SHORT, "256", MAX, "256", "model.test_score_thresh", "0.0"], "detection"),
    "swin": (PROJECTS / "ViTDet/configs/COCO/cascade_mask_rcnn_swin_b_in21k_50ep.py", "256x256",
             [SHORT, "256", MAX, "256", "model.backbone.square_pad", "256",
              "model.backbone.bottom_up.depths", "[2,2,2,2]", "model.backbone.bottom_up.embed_dim", "32",
              "model.roi_heads.box_predictors.2.test_score_thresh", "0.0"], "instance_segmentation"),
}


@pytest.mark.slow
@needs_zoo
@pytest.mark.parametrize("case", list(EXPORTS))
def test_export_verifies_on_onnxruntime_and_openvino(case, tmp_path):
    """A small input, random weights and a zero score threshold (so there are detections to compare);
    `vdeploy export` verifies each backend against PyTorch and fails when one disagrees."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    config, size, opts, task = EXPORTS[case]
    out = tmp_path / "bundle"
    r = subprocess.run([sys.executable, "-m", "vdeploy", "export", str(config), "--format", "onnx,openvino",
                        "--input-size", size, "--out", str(out), "--opts", *opts],
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "onnxruntime: PASS" in r.stdout and "openvino: PASS" in r.stdout, r.stdout[-3000:]
    deploy = json.loads((out / "deploy.json").read_text())
    assert deploy["task"] == task
    matched = [int(m) for m in re.findall(r"(\d+) matched of \d+ reference", r.stdout)]
    assert matched and min(matched) > 0, "an input had no detections: nothing was compared"


def test_mvit_graph_follows_the_input_size(tmp_path):
    """The relative-position tables of MViT's global-attention blocks (q/k grids that follow the
    input) and its window padding are computed from shapes inside the traced graph: exported at
    224x224 (grids that need no window padding), it agrees with PyTorch at two other non-square
    sizes whose grids are not multiples of one another, on onnxruntime and OpenVINO."""
    ort = pytest.importorskip("onnxruntime")
    ov = pytest.importorskip("openvino")
    from vdeploy.models.detectron2.mvit import MViT

    torch.manual_seed(0)
    net = MViT(img_size=224, embed_dim=32, depth=4, last_block_indexes=(0, 1, 2, 3)).eval()
    for name, p in net.named_parameters():
        if "rel_pos" in name:  # zero-initialised: make them count
            torch.nn.init.normal_(p, std=0.5)

    class Scales(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return tuple(self.net(x).values())

    model, path = Scales(net).eval(), tmp_path / "mvit.onnx"
    torch.onnx.export(model, torch.randn(1, 3, 224, 224), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], dynamic_axes={"x": {2: "h", 3: "w"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for hw in ((200, 328), (328, 136)):
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            want = [t.numpy() for t in model(x)]
        for got in (session.run(None, {"x": x.numpy()}), list(compiled(x.numpy()).values())):
            assert [g.shape for g in got] == [w.shape for w in want]
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, atol=2e-4, rtol=0)


@pytest.mark.slow
@needs_zoo
def test_mvitv2_dynamic_export_verifies_at_other_sizes(tmp_path):
    """Exported with dynamic height and width (no --input-size), MViTv2 verifies on onnxruntime and
    OpenVINO at inputs whose network sizes differ from the export's."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    import cv2

    from vdeploy.export.bundle_writer import EXPORT_EXAMPLE_HW
    from vdeploy.runtime.preprocess import preprocess
    from vdeploy.runtime.synthetic import synthetic_image

    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), synthetic_image(300, 500, seed=3))
    out = tmp_path / "bundle"
    config = PROJECTS / "MViTv2/configs/cascade_mask_rcnn_mvitv2_t_3x.py"
    r = subprocess.run([sys.executable, "-m", "vdeploy", "export", str(config),
                        "--format", "onnx,openvino", "--out", str(out), "--images", str(photo),
                        "--opts", SHORT, "256", MAX, "256", *MVIT_SMALL], capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "onnxruntime: PASS" in r.stdout and "openvino: PASS" in r.stdout, r.stdout[-3000:]
    deploy = json.loads((out / "deploy.json").read_text())
    assert deploy["inputs"][0]["shape"][2:] == ["height", "width"]
    record = deploy["verification"]
    for backend in ("onnxruntime", "openvino"):
        assert [i["matched"] > 0 for i in record["backends"][backend]["per_input"]] == [True] * 3

    def network_hw(img):
        return preprocess(img, deploy, None).inputs["images"].shape[2:]

    export_hw = network_hw(synthetic_image(*EXPORT_EXAMPLE_HW, seed=1))
    verified = {network_hw(cv2.imread(str(photo)))} | {
        network_hw(synthetic_image(*map(int, name.split()[-1].split("x")), seed=0))
        for name in record["inputs"] if name.startswith("random ")}
    others = verified - {export_hw}
    assert len(others) >= 2 and all(h != w for h, w in others), (export_hw, verified)
