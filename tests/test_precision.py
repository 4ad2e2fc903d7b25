"""Reduced precision: `<engine>-<precision>` backends, recorded per file, verified against float32
PyTorch with the task's reduced-precision gates."""
import json

import pytest

from conftest import run_cli
from vdeploy.errors import UserError
from vdeploy.runtime.backends import canonical_name, split_name
from vdeploy.runtime.tasks import get_task

pytest.importorskip("torch")


def test_backend_names_carry_a_precision():
    assert canonical_name("ov-bf16") == "openvino-bf16" and canonical_name("openvino") == "openvino"
    assert split_name("onnxruntime")[1] == "fp32" and split_name("torch-bf16")[1] == "bf16"
    with pytest.raises(UserError, match="runs fp32, int8, not 'bf16'"):
        split_name("onnxruntime-bf16")
    with pytest.raises(UserError, match="unknown backend"):
        split_name("tensorflow")


def test_reduced_precision_backends_are_held_to_their_own_gates():
    task = get_task("instance_segmentation")
    fp32 = {g.metric: g.threshold for g in task.resolve_gates()}
    bf16 = {g.metric: g.threshold for g in task.resolve_gates(precision="bf16")}
    assert fp32["segm_ap"] == 0.99 and bf16["segm_ap"] == 0.97
    # a user's --gate applies to every precision
    assert {g.metric: g.threshold for g in task.resolve_gates({"segm_ap": 0.9}, "int8")}["segm_ap"] == 0.9


def test_bf16_export_is_recorded_per_file_and_verified(tmp_path):
    from vdeploy.models.tiny import default_weights

    if not default_weights("shapes_seg").is_file():
        pytest.skip("no trained weights for tiny:shapes_seg")
    r = run_cli("export", "tiny:shapes_seg", "--format", "onnx,openvino", "--precision", "fp32,bf16", "--out", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "b" / "deploy.json").read_text())
    assert meta["files"]["model.xml"]["precisions"] == ["fp32", "bf16"] and "precisions" not in meta["files"]["model.onnx"]
    v = meta["verification"]["backends"]
    assert set(v) == {"onnxruntime", "openvino", "openvino-bf16"} and v["openvino-bf16"]["passed"]
    assert "pixel_agreement >= 0.99" in v["openvino-bf16"]["gates"] and "pixel_agreement >= 0.999" in v["openvino"]["gates"]
    from vdeploy.eval.synthetic import make_semantic

    images = make_semantic(tmp_path / "ds", 3) / "images"
    r = run_cli("predict", tmp_path / "b", images, "--backend", "openvino-bf16", "--out", tmp_path / "maps")
    assert r.returncode == 0 and "3 label maps from 3 images (openvino-bf16)" in r.stdout, r.stderr


def test_a_precision_no_exported_engine_runs_is_refused_before_any_work(tmp_path):
    r = run_cli("export", "torchvision:resnet18", "--input-size", "64x64", "--format", "onnx", "--precision", "fp32,bf16",
                "--out", tmp_path / "b")
    assert r.returncode == 2 and "bf16 runs on openvino" in r.stderr and not (tmp_path / "b").exists()


def test_torch_bf16_pools_boxes_from_every_pyramid_level():
    """torch-bf16 (autocast) on an FPN R-CNN: the features and roi_align's rows are bfloat16, and the
    multi-level pooler scatters them into a tensor of that dtype (it was float32: index_put refused)."""
    import torch

    from vdeploy.models.detectron2.poolers import ROIPooler

    pooler = ROIPooler(7, (1 / 4, 1 / 8, 1 / 16, 1 / 32), 0)
    gen = torch.Generator().manual_seed(0)
    features = [torch.randn(1, 8, 256 // s, 256 // s, generator=gen) for s in (4, 8, 16, 32)]
    boxes = torch.tensor([[10.0, 10.0, 40.0, 40.0], [0.0, 0.0, 250.0, 250.0], [30.0, 60.0, 150.0, 130.0]])
    ref = pooler(features, boxes)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = pooler([f.bfloat16() for f in features], boxes)
    assert got.dtype == torch.bfloat16 and got.shape == ref.shape == (3, 8, 7, 7)
    assert torch.allclose(got.float(), ref, atol=0.05, rtol=0.02)
