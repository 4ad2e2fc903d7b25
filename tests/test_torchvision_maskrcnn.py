"""torchvision Mask R-CNN end to end: export onnx + openvino, predict, score against PyTorch."""
import json

import pytest
import torch
import torchvision

from coco_ap import ap_against
from conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def maskrcnn(module_tmp, goldens):
    d = module_tmp.mktemp("maskrcnn")
    torch.manual_seed(7)
    m = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    torch.save(m.state_dict(), d / "w.pth")
    r = run_cli("export", "torchvision:maskrcnn_resnet50_fpn", "--weights", d / "w.pth", "--format", "onnx,openvino",
                "--out", d / "bundle")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    images = [goldens / "images" / f"{n}.png" for n in ("astronaut", "chelsea")]
    r = run_cli("predict", "torchvision:maskrcnn_resnet50_fpn", "--weights", d / "w.pth", *images, "--out", d / "ref.json")
    assert r.returncode == 0, r.stderr
    return d, images


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_exported_backends_give_pytorchs_detections(maskrcnn, backend):
    d, images = maskrcnn
    r = run_cli("predict", d / "bundle", *images, "--backend", backend, "--out", d / f"{backend}.json")
    assert r.returncode == 0, r.stderr
    ref, got = json.loads((d / "ref.json").read_text()), json.loads((d / f"{backend}.json").read_text())
    assert len(ref) > 20
    assert all(isinstance(p["segmentation"]["counts"], str) and p["category_name"] for p in got)
    assert ap_against(ref, got, "bbox") >= 0.99
    assert ap_against(ref, got, "segm") >= 0.99


def test_bundle_records_a_passed_verification(maskrcnn):
    d, _ = maskrcnn
    meta = json.loads((d / "bundle" / "deploy.json").read_text())
    v = meta["verification"]
    assert v["passed"] and {"onnxruntime", "openvino"} == set(v["backends"])
    # verified away from the export example's shape
    assert any("640x480" in i for i in v["inputs"]) and meta["input_size"] is None
