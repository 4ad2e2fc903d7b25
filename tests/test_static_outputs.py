"""--static-outputs: every detection output has a fixed shape in the graph itself, and the runtime
reads the padded form to the same predictions as the dynamic one."""
import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from vdeploy.models.tiny import default_weights  # noqa: E402
from vdeploy.eval.synthetic import make_coco  # noqa: E402


def vd(*args):
    r = subprocess.run([sys.executable, "-m", "vdeploy", *map(str, args)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


def test_static_outputs_have_fixed_shapes_and_give_the_same_predictions(tmp_path):
    if not default_weights("shapes_det").is_file():
        pytest.skip("no trained weights for tiny:shapes_det")
    vd("export", "tiny:shapes_det", "--format", "onnx,openvino", "--out", tmp_path / "dyn")
    r = vd("export", "tiny:shapes_det", "--format", "onnx,openvino", "--out", tmp_path / "static", "--static-outputs")
    assert "onnxruntime: PASS" in r.stdout and "openvino: PASS" in r.stdout
    model = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "static" / "model.onnx")))
    meta = json.loads((tmp_path / "static" / "deploy.json").read_text())
    k = meta["postprocess"]["max_detections"]
    shapes = {o.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in o.type.tensor_type.shape.dim]
              for o in model.graph.output}
    assert shapes["boxes"] == [k, 4] and shapes["scores"] == [k] and shapes["num_detections"] == [1]
    assert all(isinstance(d, int) and d > 0 for s in shapes.values() for d in s), shapes
    images = make_coco(tmp_path / "ds", 4).parent / "images"
    for backend in ("onnxruntime", "openvino"):
        vd("predict", tmp_path / "dyn", images, "--backend", backend, "--out", tmp_path / f"dyn-{backend}.json")
        vd("predict", tmp_path / "static", images, "--backend", backend, "--out", tmp_path / f"static-{backend}.json")
        dyn = json.loads((tmp_path / f"dyn-{backend}.json").read_text())
        static = json.loads((tmp_path / f"static-{backend}.json").read_text())
        assert len(dyn) > 0 and static == dyn
    # `vdeploy verify` later rebuilds the PyTorch reference with the same padding
    assert "verification passed" in vd("verify", tmp_path / "static").stdout
