"""predict from a bundle: outputs, bad inputs refused with one line and exit 2, outputs kept."""
import json
import shutil
import subprocess
import sys

import cv2
import numpy as np

from conftest import ROOT, run_cli
from vdeploy.runtime.synthetic import synthetic_image


def _image(tmp_path, name="a.png", hw=(120, 160)):
    p = tmp_path / name
    cv2.imwrite(str(p), synthetic_image(*hw, seed=3))
    return p


def test_predict_classification_writes_json_and_pictures(small_classifier_bundle, tmp_path):
    img = _image(tmp_path)
    r = run_cli("predict", small_classifier_bundle.path, img, "--backend", "openvino", "--out", tmp_path / "r.json",
                "--save-vis", tmp_path / "vis")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "r.json").read_text())
    assert res[0]["file_name"] == "a.png" and len(res[0]["topk"]) == 5
    assert cv2.imread(str(tmp_path / "vis" / "a.jpg")).shape == (120, 160, 3)


def test_unreadable_image_is_refused_and_output_kept(small_classifier_bundle, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    out = tmp_path / "keep.json"
    out.write_text("{}")
    # --strict: the first bad image stops the run (without it, see test_no_output_lost.py)
    r = run_cli("predict", small_classifier_bundle.path, _image(tmp_path), bad, "--out", out, "--strict")
    assert r.returncode == 2
    assert "bad.png: not a decodable image" in r.stderr and "Traceback" not in r.stderr
    assert out.read_text() == "{}"


def test_truncated_model_is_refused_and_output_kept(small_classifier_bundle, tmp_path):
    d = tmp_path / "b"
    shutil.copytree(small_classifier_bundle.path, d)
    (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes()[:1000])
    out = tmp_path / "keep.json"
    out.write_text("{}")
    r = run_cli("predict", d, _image(tmp_path), "--backend", "onnxruntime", "--out", out)
    assert r.returncode == 2 and "SHA-256 differs" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert out.read_text() == "{}"


def test_missing_image_and_bad_flags_are_one_line_errors(small_classifier_bundle, tmp_path):
    r = run_cli("predict", small_classifier_bundle.path, tmp_path / "nope.jpg", "--out", tmp_path / "r.json")
    assert r.returncode == 2 and "nope.jpg: no such image file" in r.stderr
    r = run_cli("predict", small_classifier_bundle.path, _image(tmp_path), "--backend", "tensorflow", "--out", tmp_path / "r.json")
    assert r.returncode == 2 and "unknown backend" in r.stderr
    r = run_cli("predict", tmp_path, _image(tmp_path), "--out", tmp_path / "r.json")
    assert r.returncode == 2 and "not a bundle" in r.stderr


def test_runtime_and_predict_work_without_torch(small_classifier_bundle, tmp_path):
    img = _image(tmp_path)
    code = f"""
import sys, runpy
sys.modules["torch"] = None  # any import of torch now fails
import vdeploy.runtime
sys.argv = ["vdeploy", "predict", {str(small_classifier_bundle.path)!r}, {str(img)!r}, "--backend", "onnxruntime", "--out", {str(tmp_path / 'nt.json')!r}]
runpy.run_module("vdeploy", run_name="__main__")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "nt.json").read_text())[0]["topk"]


def test_every_runtime_module_imports_without_torch():
    code = """
import sys, pkgutil, importlib
sys.modules["torch"] = None
import vdeploy.runtime as rt
bad = []
for m in pkgutil.walk_packages(rt.__path__, "vdeploy.runtime."):
    try:
        importlib.import_module(m.name)
    except ImportError as e:
        # modules that run inside another server (Triton's Python backend) may need its packages;
        # what must never be needed is torch
        if (e.name or "").split(".")[0] == "torch" or "torch" in str(e).split("'")[1:2]:
            bad.append(f"{m.name}: {e}")
print("\\n".join(bad)); sys.exit(1 if bad else 0)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
