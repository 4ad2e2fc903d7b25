"""End to end through the command line, on the tiny shape models and generated datasets:
accuracy side by side on models that really detect, kill-and-resume, clear errors."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("torch")

from vdeploy.models.tiny import default_weights  # noqa: E402
from vdeploy.eval.synthetic import make_coco, make_imagefolder, make_semantic  # noqa: E402


def vd(*args, check=True, **kw):
    r = subprocess.run([sys.executable, "-m", "vdeploy", *map(str, args)], capture_output=True, text=True,
                       timeout=600, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"vdeploy {args[0]} failed ({r.returncode}): {r.stderr[-2000:]}")
    return r


def bundle(module_tmp, name, formats):
    if not default_weights(name).is_file():
        pytest.skip(f"no trained weights for tiny:{name}; run scripts/train_tiny.py {name}")
    out = module_tmp.mktemp(name) / "b"
    vd("export", f"tiny:{name}", "--format", formats, "--out", out)
    return out


@pytest.fixture(scope="module")
def det_bundle(module_tmp):
    return bundle(module_tmp, "shapes_det", "onnx,openvino")


def test_coco_three_backends_side_by_side(det_bundle, tmp_path):
    ann = make_coco(tmp_path / "ds", n=40, seed=100)
    r = vd("eval", det_bundle, "--dataset", ann, "--backends", "torch,onnxruntime,openvino", "--out", tmp_path / "ev",
           "--no-progress")
    assert "bbox/AP" in r.stdout and "Δ openvino" in r.stdout
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())["backends"]
    assert list(rep) == ["torch", "onnxruntime", "openvino"]
    for m in rep.values():
        assert m["bbox/AP"] > 0.5 and m["segm/AP"] > 0.3, rep  # the tiny model really detects
        assert abs(m["bbox/AP"] - rep["torch"]["bbox/AP"]) < 0.01
        assert abs(m["segm/AP"] - rep["torch"]["segm/AP"]) < 0.01
    assert (tmp_path / "ev" / "report.md").read_text().count("|") > 10


def test_killed_run_resumes_to_the_uninterrupted_numbers(det_bundle, tmp_path):
    ann = make_coco(tmp_path / "ds", n=160, seed=7)
    whole = tmp_path / "whole"
    vd("eval", det_bundle, "--dataset", ann, "--backends", "onnxruntime", "--out", whole, "--no-progress")
    out = tmp_path / "killed"
    preds = out / "predictions" / "onnxruntime" / "predictions.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "vdeploy", "eval", str(det_bundle), "--dataset", str(ann),
                          "--backends", "onnxruntime", "--out", str(out), "--no-progress"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if preds.exists() and preds.read_bytes().count(b"\n") >= 20:
            os.kill(p.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    p.wait()
    done = preds.read_bytes().count(b"\n")
    if p.returncode == 0 or done >= 160:
        pytest.skip("the run finished before it could be killed")
    assert not (out / "report.json").exists()
    vd("eval", det_bundle, "--dataset", ann, "--backends", "onnxruntime", "--out", out, "--no-progress")
    a = json.loads((whole / "report.json").read_text())["backends"]
    b = json.loads((out / "report.json").read_text())["backends"]
    assert a == b
    keys = [json.loads(line)["image"] for line in preds.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 160


def test_semantic_and_classification(module_tmp, tmp_path):
    seg = bundle(module_tmp, "shapes_seg", "onnx,openvino")
    ds = make_semantic(tmp_path / "sem", n=12, seed=50)
    vd("eval", seg, "--dataset", ds, "--out", tmp_path / "ev", "--no-progress")
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())
    got = rep["backends"]
    assert set(got) == {"onnxruntime", "openvino"}
    # all-background would score about 0.23; the tiny model finds and mostly names the shapes
    assert all(m["mIoU"] > 0.6 and m["aAcc"] > 0.9 for m in got.values()), got
    assert abs(got["onnxruntime"]["mIoU"] - got["openvino"]["mIoU"]) < 0.005
    assert set(rep["tables"]["onnxruntime"]["per-class"]) == {"background", "circle", "square", "triangle"}
    cls = bundle(module_tmp, "shapes_cls", "onnx")
    folder = make_imagefolder(tmp_path / "cls", per_class=10, seed=60)
    vd("eval", cls, "--dataset", folder, "--out", tmp_path / "evc", "--no-progress")
    m = json.loads((tmp_path / "evc" / "report.json").read_text())["backends"]["onnxruntime"]
    assert m["top-1"] > 0.9 and m["top-5"] == 1.0


def test_bad_inputs_exit_2_naming_the_file(det_bundle, tmp_path):
    ann = make_coco(tmp_path / "ds", n=3)
    (ann.parent / "images" / "0001.png").unlink()
    r = vd("eval", det_bundle, "--dataset", ann, check=False)
    assert r.returncode == 2 and "0001.png" in r.stderr
    r = vd("eval", det_bundle, "--dataset", tmp_path / "nothing-here", check=False)
    assert r.returncode == 2 and "nothing-here" in r.stderr
    sem = make_semantic(tmp_path / "sem", n=2)
    r = vd("eval", det_bundle, "--dataset", sem, check=False)
    assert r.returncode == 2 and "cannot be scored" in r.stderr
