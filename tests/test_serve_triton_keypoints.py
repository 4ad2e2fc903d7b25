"""Keypoint R-CNN through `vdeploy export-triton` and a real Triton Inference Server (the pytriton
wheel's, run by `vdeploy triton-serve` as tests/test_serve_triton_server.py runs it): the answer is
the serving contract's `keypoints` FP32 [N, K, 3] beside the detection outputs, one image per request
with a leading 1, equal to `Predictor.predict`'s. The model is the zoo's keypoint R-CNN config shrunk
(ResNet-18, narrow FPN and heads, 128-pixel images) so that it exports in seconds; its weights are
the seeded initialisation, which is enough to compare two runners of the same bundle."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import SHARED, run_cli

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")
httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed (pip install vdeploy[triton])")

from test_serve_triton import parse_config  # noqa: E402
from test_serve_triton_server import launch_triton_serve, triton_env  # noqa: E402,F401  (triton_env: a fixture)

CONFIG = SHARED / "zoo" / "detectron2" / "COCO-Keypoints" / "keypoint_rcnn_R_50_FPN_3x.yaml"
SMALL = [("MODEL.RESNETS.DEPTH", "18"), ("MODEL.RESNETS.RES2_OUT_CHANNELS", "64"), ("MODEL.FPN.OUT_CHANNELS", "32"),
         ("MODEL.ROI_BOX_HEAD.FC_DIM", "64"), ("MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", "[32, 32]"),
         ("INPUT.MIN_SIZE_TEST", "128"), ("INPUT.MAX_SIZE_TEST", "160"), ("MODEL.RPN.PRE_NMS_TOPK_TEST", "300"),
         ("MODEL.RPN.POST_NMS_TOPK_TEST", "100")]


@pytest.fixture(scope="module")
def kp_bundle(module_tmp):
    if not CONFIG.is_file():
        pytest.skip(f"{CONFIG} is absent")
    if subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode != 0:
        pytest.skip("exporting needs torch (the export extra)")
    from vdeploy.export import export_bundle
    from vdeploy.frameworks import build_model

    dm = build_model(str(CONFIG), None, config_overrides=SMALL)
    return export_bundle(dm, module_tmp.mktemp("kp") / "kp", ["onnx"], verify=False, log=lambda *a: None)


@pytest.fixture(scope="module")
def repository(kp_bundle, module_tmp):
    out = module_tmp.mktemp("repo") / "repo"
    r = run_cli("export-triton", kp_bundle.path, out, "--name", "kp", "--max-batch-size", "4")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def triton(triton_env, repository):  # noqa: F811
    from vdeploy.serve.triton_server import stop

    process, http, _ = launch_triton_serve([repository], triton_env, repository.parent / "tritonserver.log")
    yield f"127.0.0.1:{http}"
    stop(process, timeout=90)


def person_image() -> np.ndarray:
    rng = np.random.default_rng(5)
    img = rng.integers(0, 60, (120, 150, 3), dtype=np.uint8)
    cv2.ellipse(img, (75, 60), (20, 45), 0, 0, 360, (40, 120, 220), -1)
    cv2.circle(img, (75, 22), 12, (180, 200, 230), -1)
    return img


def test_config_declares_the_keypoints_output(repository):
    cfg = parse_config(repository / "kp" / "config.pbtxt")
    outputs = {o.name: (o.data_type, [int(d) for d in o.dims]) for o in cfg.output}
    assert outputs["keypoints"] == ("TYPE_FP32", [-1, -1, 3])
    assert outputs["boxes"] == ("TYPE_FP32", [-1, 4]) and cfg.max_batch_size == 4


def test_keypoints_answer_equals_vdeploy_predict(triton, kp_bundle):
    from vdeploy.runtime.predictor import Predictor

    img = person_image()
    want = Predictor(kp_bundle.path, "onnxruntime").predict(img)
    assert len(want) > 0
    client = httpclient.InferenceServerClient(triton)
    inp = httpclient.InferInput("image", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[cv2.imencode(".png", img)[1].tobytes()]], dtype=object))
    try:
        got = client.infer("kp", [inp])
    finally:
        client.close()
    keypoints, boxes = got.as_numpy("keypoints"), got.as_numpy("boxes")
    assert keypoints.dtype == np.float32 and keypoints.shape == (1, len(want), 17, 3)
    np.testing.assert_allclose(boxes[0], want.boxes, atol=1e-3)
    np.testing.assert_allclose(keypoints[0], want.keypoints, atol=1e-3, rtol=1e-4)
    assert got.as_numpy("image_index")[0].tolist() == [0] * len(want)
