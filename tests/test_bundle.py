import json
import shutil

import pytest

from vdeploy.errors import BundleError
from vdeploy.bundle import load_bundle


def _copy(bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(bundle.path, dst)
    return dst


def test_bundle_records_every_file_with_its_hash(small_classifier_bundle):
    b = load_bundle(small_classifier_bundle.path)
    assert set(b.formats) == {"onnx", "openvino", "torchscript"}
    assert {"model.onnx", "model.xml", "model.bin", "model.ts"} <= set(b.meta["files"])
    assert all(len(f["sha256"]) == 64 for f in b.meta["files"].values())
    assert b.meta["verification"]["passed"] is True
    prov = b.meta["provenance"]
    assert prov["source"] == "torchvision:resnet18" and prov["torch"] and prov["opset"] == 17


def test_truncated_model_file_is_refused(small_classifier_bundle, tmp_path):
    d = _copy(small_classifier_bundle, tmp_path)
    data = (d / "model.onnx").read_bytes()
    (d / "model.onnx").write_bytes(data[:1000])
    with pytest.raises(BundleError, match="model.onnx: SHA-256 differs"):
        load_bundle(d)


def test_edited_deploy_json_is_refused(small_classifier_bundle, tmp_path):
    d = _copy(small_classifier_bundle, tmp_path)
    meta = json.loads((d / "deploy.json").read_text())
    meta["postprocess"]["type"] = "embedding"
    (d / "deploy.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="edited"):
        load_bundle(d)


def test_missing_file_and_other_schema_are_refused(small_classifier_bundle, tmp_path):
    d = _copy(small_classifier_bundle, tmp_path)
    (d / "model.bin").unlink()
    with pytest.raises(BundleError, match="model.bin is listed"):
        load_bundle(d)
    meta = json.loads((d / "deploy.json").read_text())
    meta["schema_version"] = 99
    (d / "deploy.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="schema_version 99"):
        load_bundle(d)
    (d / "deploy.json").unlink()
    with pytest.raises(BundleError, match="no deploy.json"):
        load_bundle(d)
