"""Keypoint R-CNN and panoptic FPN against the real detectron2's outputs (tests/data/references/
detectron2/<case>, made by scripts/references/make_d2_kp_pan_references.py with the shared stand-in
weights): keypoint AP (COCO OKS) >= 0.99 and PQ >= 0.99 through PyTorch, onnxruntime and OpenVINO,
scored by the tasks' own agreement metrics with detectron2's outputs as ground truth.

The checkpoints are rebuilt from ../shared (make_ckpt.py), so the model tests skip without it; the
checks that the references are a fair bar need nothing but the files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import GOLDENS, SHARED, goldens_or_skip
from vdeploy.runtime.metrics.panoptic import rgb_to_id
from vdeploy.runtime.prediction import Prediction
from vdeploy.runtime.tasks import get_task

REFS = Path(__file__).parent / "data" / "references" / "detectron2"
KEYPOINTS = REFS / "keypoint_rcnn_R_50_FPN_3x"
PANOPTIC = REFS / "panoptic_fpn_R_50_3x"
BACKENDS = ("torch", "onnxruntime", "openvino")


def _case_or_skip(case: Path) -> dict:
    if not (case / "manifest.json").is_file():
        pytest.skip(f"{case} is absent: make it with scripts/references/make_d2_kp_pan_references.py")
    return json.loads((case / "manifest.json").read_text())


def _image_hw(name: str) -> tuple[int, int]:
    import cv2

    return tuple(cv2.imread(str(GOLDENS / "images" / name)).shape[:2])


def keypoint_references(case: Path = KEYPOINTS) -> dict[str, Prediction]:
    """detectron2's keypoint detections per image, as Predictions (continuous coordinates)."""
    dets = json.loads((case / "keypoints.json").read_text())
    out = {}
    for image in dict.fromkeys(d["image"] for d in dets):
        mine = [d for d in dets if d["image"] == image]
        out[image] = Prediction(
            "keypoints", _image_hw(image), boxes=np.array([d["bbox"] for d in mine], np.float32),
            scores=np.array([d["score"] for d in mine], np.float32),
            classes=np.array([d["category_id"] for d in mine], np.int64),
            keypoints=np.array([d["keypoints"] for d in mine], np.float32))
    return out


def panoptic_references(case: Path = PANOPTIC) -> dict[str, Prediction]:
    """detectron2's panoptic segment maps and segments per image, as Predictions."""
    import cv2

    info = json.loads((case / "panoptic.json").read_text())
    out = {}
    for image, segments in info.items():
        rgb = cv2.imread(str(case / "panoptic" / (Path(image).stem + ".png")))[..., ::-1]
        out[image] = Prediction("panoptic_segmentation", rgb.shape[:2], panoptic_seg=rgb_to_id(rgb).astype(np.int32),
                                segments_info=segments)
    return out


# --------------------------------------------------------------------------- the references are a fair bar

def test_keypoint_reference_is_a_fair_bar():
    _case_or_skip(KEYPOINTS)
    refs = keypoint_references()
    assert len(refs) >= 2
    for image, ref in refs.items():
        assert len(ref) >= 20, image
        assert len(np.unique(ref.scores)) == len(ref.scores), f"{image}: tied scores"
        # keypoints spread over the box (not stuck in a corner) with peaked heatmaps: softmax mass at
        # the peak well above a flat map's 1 / 56^2
        inside = ((ref.keypoints[..., 0] >= ref.boxes[:, None, 0]) & (ref.keypoints[..., 0] <= ref.boxes[:, None, 2]))
        assert inside.all(), image
        assert float(np.median(ref.keypoints[..., 2])) > 100.0 / 56 ** 2, image


def test_panoptic_reference_is_a_fair_bar():
    _case_or_skip(PANOPTIC)
    refs = panoptic_references()
    assert len(refs) >= 2
    for image, ref in refs.items():
        info = ref.segments_info
        things = {s["category_id"] for s in info if s["isthing"]}
        stuff = {s["category_id"] for s in info if not s["isthing"]}
        assert len(things) >= 3 and len(stuff) >= 3, image
        ids = set(np.unique(ref.panoptic_seg).tolist()) - {0}
        assert ids == {s["id"] for s in info}, image
        for s in info:  # the map is the one detectron2 described (it gives stuff segments an area)
            pixels = int((ref.panoptic_seg == s["id"]).sum())
            assert pixels > 0 and pixels == s.get("area", pixels), (image, s)


# --------------------------------------------------------------------------- vdeploy against them

def _checkpoint(case: Path, out: Path) -> Path:
    subprocess.run([sys.executable, str(SHARED / "acceptance" / "make_ckpt.py"), str(case), str(out)],
                   check=True, capture_output=True)
    return out


def _predictions(case: Path, module_tmp) -> tuple[dict, dict]:
    """{backend: {image: Prediction}} of vdeploy's native model and its bundle, and the bundle's spec."""
    goldens_or_skip()
    pytest.importorskip("torch")
    from vdeploy.api import open_predictor
    from vdeploy.export import export_bundle
    from vdeploy.frameworks import build_model
    from vdeploy.runtime.io import read_image
    from vdeploy.runtime.predictor import Predictor

    manifest = _case_or_skip(case)
    tmp = module_tmp.mktemp(case.name)
    ckpt = _checkpoint(case, tmp / "model_final.pth")
    config = str(SHARED / "zoo" / "detectron2" / manifest["config"])
    overrides = list(zip(manifest["overrides"][::2], manifest["overrides"][1::2]))
    refs = keypoint_references(case) if case == KEYPOINTS else panoptic_references(case)
    images = {name: read_image(GOLDENS / "images" / name) for name in refs}
    predictors = {"torch": open_predictor(config, str(ckpt), config_overrides=overrides)}
    dm = build_model(config, str(ckpt), config_overrides=overrides)
    bundle = export_bundle(dm, tmp / "bundle", ["onnx", "openvino"], verify=False, log=lambda *a: None)
    for backend in BACKENDS[1:]:
        predictors[backend] = Predictor(bundle.path, backend)
    preds = {b: {name: p.predict(im) for name, im in images.items()} for b, p in predictors.items()}
    return preds, bundle.meta


@pytest.fixture(scope="module")
def keypoint_predictions(module_tmp):
    return _predictions(KEYPOINTS, module_tmp)


@pytest.fixture(scope="module")
def panoptic_predictions(module_tmp):
    return _predictions(PANOPTIC, module_tmp)


@pytest.mark.parametrize("backend", BACKENDS)
def test_keypoints_match_detectron2(keypoint_predictions, backend):
    preds, spec = keypoint_predictions
    refs = keypoint_references()
    names = sorted(refs)
    agreement = get_task("keypoints").agreement([refs[n] for n in names], [preds[backend][n] for n in names], spec)
    print(backend, agreement.metrics)  # the figures, with pytest -s
    assert agreement.metrics["bbox_ap"] >= 0.99, agreement.metrics
    assert agreement.metrics["keypoint_ap"] >= 0.99, agreement.metrics


@pytest.mark.parametrize("backend", BACKENDS)
def test_panoptic_segments_match_detectron2(panoptic_predictions, backend):
    preds, spec = panoptic_predictions
    refs = panoptic_references()
    names = sorted(refs)
    agreement = get_task("panoptic_segmentation").agreement([refs[n] for n in names],
                                                              [preds[backend][n] for n in names], spec)
    print(backend, agreement.metrics, agreement.per_input)  # the figures, with pytest -s
    assert agreement.metrics["pq"] >= 0.99, (agreement.metrics, agreement.per_input)
