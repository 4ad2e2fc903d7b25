"""int8 by post-training static quantization (model.int8.onnx, model.int8.xml), float layers chosen by
measurement, calibration from a folder; the bench's throughput mode (--streams)."""
import json
import threading

import numpy as np
import pytest

from conftest import run_cli

pytest.importorskip("torch")
pytest.importorskip("onnxruntime.quantization")


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    from vdeploy.eval.synthetic import make_imagefolder

    return make_imagefolder(tmp_path_factory.mktemp("calib"), per_class=2)


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory, calib_dir):
    pytest.importorskip("nncf")
    from vdeploy.models.tiny import default_weights

    if not default_weights("shapes_cls").is_file():
        pytest.skip("no trained weights for tiny:shapes_cls")
    out = tmp_path_factory.mktemp("int8") / "b"
    r = run_cli("export", "tiny:shapes_cls", "--format", "onnx,openvino", "--precision", "fp32,int8",
                "--calib", calib_dir, "--out", out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    return out, r


def test_int8_files_are_recorded_and_verified_with_the_int8_gates(int8_bundle):
    out, r = int8_bundle
    meta = json.loads((out / "deploy.json").read_text())
    assert meta["files"]["model.int8.onnx"] == {**meta["files"]["model.int8.onnx"], "format": "onnx", "precisions": ["int8"]}
    assert meta["files"]["model.int8.xml"]["precisions"] == ["int8"] and meta["files"]["model.int8.bin"]["role"] == "weights"
    assert "precisions" not in meta["files"]["model.onnx"]  # the float32 files stay float32
    v = meta["verification"]["backends"]
    assert {"onnxruntime-int8", "openvino-int8"} <= set(v) and v["onnxruntime-int8"]["passed"] and v["openvino-int8"]["passed"]
    assert "top1_agreement >= 0.99" in v["onnxruntime-int8"]["gates"]
    # the quantized graph really is quantized
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "int8, every layer quantized:" in r.stdout  # the search measured before it chose


def test_calibration_from_a_folder(int8_bundle, calib_dir):
    out, _ = int8_bundle
    prov = json.loads((out / "deploy.json").read_text())["provenance"]["int8"]
    n = len([p for p in calib_dir.rglob("*.png")])
    assert prov["calibration"] == str(calib_dir) and prov["calibration_images"] == n > 0
    assert isinstance(prov["float_layers"], list)


def test_a_calibration_folder_without_images_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_cli("export", "torchvision:resnet18", "--input-size", "64x64", "--precision", "fp32,int8",
                "--calib", tmp_path / "empty", "--out", tmp_path / "b")
    assert r.returncode == 2 and "has no images" in r.stderr and not (tmp_path / "b").exists()


def test_int8_needs_an_engine_with_int8_files(tmp_path):
    r = run_cli("export", "torchvision:resnet18", "--input-size", "64x64", "--format", "torchscript",
                "--precision", "fp32,int8", "--out", tmp_path / "b")
    assert r.returncode == 2 and "int8 runs on onnx, openvino" in r.stderr


def test_the_search_scores_the_worst_gate():
    from vdeploy.export.float_nodes import _score
    from vdeploy.runtime.tasks.base import Gate

    gates = [Gate("ap", 0.95, True), Gate("px", 1.0, False)]
    assert _score({"ap": 0.95, "px": 0.5}, gates) == pytest.approx(1.0)
    assert _score({"ap": 0.99, "px": 2.0}, gates) == pytest.approx(0.5)
    assert _score({"ap": float("nan"), "px": 0.1}, gates) == 0.0


def test_streams_run_concurrently_and_count_every_request():
    from vdeploy.bench.streams import run_streams

    seen, lock, inflight, peak = [], threading.Lock(), [0], [0]

    def work(i):
        with lock:
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
        threading.Event().wait(0.01)
        with lock:
            inflight[0] -= 1
            seen.append(i)

    lat, wall = run_streams(work, 3, warmup=1, iters=4)
    assert len(lat) == 12 and len(seen) == 15 and peak[0] == 3 and wall > 0


def test_bench_throughput_mode_has_a_row_per_stream_count(int8_bundle, tmp_path):
    out, _ = int8_bundle
    r = run_cli("bench", out, "--backends", "onnxruntime,openvino-int8", "--streams", "1,2", "--iters", "4",
                "--warmup", "1", "--json", tmp_path / "rows.json")
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(x["backend"], x["streams"]) for x in rows] == [("onnxruntime", 1), ("onnxruntime", 2),
                                                            ("openvino-int8", 1), ("openvino-int8", 2)]
    assert all(x["throughput"] > 0 and np.isfinite(x["latency_ms"]["p50"]) for x in rows)
    assert "streams" in r.stdout
    r = run_cli("bench", out, "--streams", "0")
    assert r.returncode == 2 and "--streams" in r.stderr
