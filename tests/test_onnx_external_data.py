"""A model whose ONNX graph is over protobuf's 2 GB limit (ViTDet-H, ...): torch's exporter then
writes every tensor as a file beside the graph. The bundle holds the graph and one tensor file
(model.onnx.data, role "weights", hashed like any file), and onnxruntime and OpenVINO run it.

Exporting a real 2 GB model takes minutes and GBs, so the exporter's large-model layout is
reproduced on a small model: the real export, then its tensors moved out one file each, as the
exporter lays them out over the limit."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from vdeploy.bundle import load_bundle  # noqa: E402
from vdeploy.export import export_bundle  # noqa: E402
from vdeploy.export.formats import ONNX_DATA  # noqa: E402
from vdeploy.frameworks import build_model  # noqa: E402
from vdeploy.runtime.predictor import Predictor  # noqa: E402


@pytest.fixture()
def exporter_over_two_gigabytes(monkeypatch):
    real = torch.onnx.export

    def export(model, args, f, **kw):
        real(model, args, f, **kw)
        proto = onnx.load(f)
        onnx.save_model(proto, f, save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)

    monkeypatch.setattr(torch.onnx, "export", export)


def test_large_graph_is_bundled_with_its_tensor_file_and_runs(tmp_path, exporter_over_two_gigabytes):
    dm = build_model("torchvision:resnet18", None, input_size=(64, 64))
    bundle = export_bundle(dm, tmp_path / "b", ["onnx", "openvino"], log=lambda *a: None)
    files = sorted(p.name for p in bundle.path.iterdir())
    assert files == sorted(["deploy.json", "model.onnx", ONNX_DATA, "model.xml", "model.bin"])
    entry = json.loads((bundle.path / "deploy.json").read_text())["files"][ONNX_DATA]
    assert entry["role"] == "weights" and entry["format"] == "onnx"
    assert (bundle.path / ONNX_DATA).stat().st_mode & 0o777 == (bundle.path / "model.bin").stat().st_mode & 0o777
    graph = onnx.load(str(bundle.path / "model.onnx"), load_external_data=False)
    external = [t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer]
    assert sum(external) > 20 and (bundle.path / "model.onnx").stat().st_size < 100_000  # the graph alone
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    probs = [Predictor(bundle.path, backend).load().predict(image).probs for backend in ("onnxruntime", "openvino")]
    assert probs[0].shape == (1000,) and np.allclose(probs[0], probs[1], atol=1e-4)
    # the tensor file is part of the sealed bundle: altering it is caught on load
    with open(bundle.path / ONNX_DATA, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01")
    with pytest.raises(Exception, match=ONNX_DATA.replace(".", r"\.")):
        load_bundle(bundle.path)
