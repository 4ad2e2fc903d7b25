"""The repository of `vdeploy export-triton`, served by a real Triton Inference Server.

The server is the `tritonserver` of the nvidia-pytriton wheel, run from a Python environment of its
own (vdeploy.serve.triton_server.build_env: numpy < 2 for Triton's Python backend), built once and
kept under VDEPLOY_TEST_CACHE (default ~/.cache/vdeploy-tests). It listens on 127.0.0.1 only, on
free ports, and is stopped by its PID at the end.
"""
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SHARED, run_cli

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")
httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed (pip install vdeploy[triton])")
# tritonclient.grpc registers the inference protos that KServe (imported by the serve tests) also
# registers: in one process the second registration fails, so the gRPC client runs in its own.
HAVE_GRPC = importlib.util.find_spec("tritonclient.grpc") is not None
GRPC_INFER = """
import sys, numpy as np, tritonclient.grpc as g
url, name, blob_file, out, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5].split(",")
client = g.InferenceServerClient(url)
inp = g.InferInput("image", [1, 1], "BYTES")
inp.set_data_from_numpy(np.array([[open(blob_file, "rb").read()]], dtype=object))
try:
    result = client.infer(name, [inp])
finally:
    client.close()
np.savez(out, **{n: result.as_numpy(n) for n in names})
"""

# name -> `vdeploy export` arguments. Besides the tiny test models: the demo's trained detectron2
# Mask R-CNN (its own YAML and checkpoint) and an MMSegmentation zoo config (SegFormer-B0, stand-in
# random weights, 128x128): the real architectures, exported small so that the module stays quick.
SHAPES_CONFIG = ROOT / "demo" / "shapes" / "mask_rcnn_R_50_narrow_FPN_shapes.yaml"
SEGFORMER = SHARED / "zoo" / "mmseg" / "segformer" / "segformer_mit-b0_8xb2-160k_ade20k-512x512.py"
TASKS = {"det": ["tiny:shapes_det"], "seg": ["tiny:shapes_seg"],
         "maskrcnn": [SHAPES_CONFIG, "--weights", SHAPES_CONFIG.with_name("model_final.pth"), "--no-verify"],
         "segformer": [SEGFORMER, "--input-size", "128x128", "--no-verify"]}
DETECTORS = ("det", "maskrcnn")
DELAY_US = 200_000  # long enough that concurrent requests reliably meet in one batch


def cache_dir() -> Path:
    return Path(os.environ.get("VDEPLOY_TEST_CACHE") or Path.home() / ".cache" / "vdeploy-tests")


@pytest.fixture(scope="module")
def triton_env():
    from vdeploy.serve.triton_server import build_env

    env = cache_dir() / f"triton-env-py{sys.version_info[0]}{sys.version_info[1]}"
    try:
        return build_env(env, timeout=900)
    except Exception as e:  # no network to PyPI, no wheel for this platform: nothing to test against
        pytest.skip(f"cannot build Triton's Python environment at {env}: {e}")


@pytest.fixture(scope="module")
def bundles(module_tmp):
    if subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode != 0:
        pytest.skip("exporting the tiny bundles needs torch (the export extra)")
    root = module_tmp.mktemp("bundles")
    for name, args in TASKS.items():
        if not Path(args[0]).is_file() and ":" not in str(args[0]):
            continue  # the shared zoo is absent: its tests skip (need_bundle)
        r = run_cli("export", *args, "--format", "onnx", "--out", root / name)
        assert r.returncode == 0, r.stderr[-2000:]
    return root


def need_bundle(bundles, name):
    if not (bundles / name).is_dir():
        pytest.skip(f"no {name} bundle: {TASKS[name][0]} is absent")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def launch_triton_serve(repos, triton_env, log: Path):
    """`vdeploy triton-serve`, as a user runs it, on free loopback ports; (process, http, grpc) once
    Triton answers ready, else the test fails with the server's log."""
    from vdeploy.serve.triton_server import stop, wait_ready

    http, grpc = free_ports(2)
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "vdeploy", "triton-serve", *map(str, repos), "--env",
                                    str(triton_env), "--http-port", str(http), "--grpc-port", str(grpc),
                                    "--metrics-port", "0"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{http}", process, timeout=180)
    except Exception:
        stop(process)
        pytest.fail(f"tritonserver did not come up:\n{log.read_text()[-3000:]}")
    return process, http, grpc


@pytest.fixture(scope="module")
def triton(triton_env, bundles, module_tmp):
    """One server, one repository per model (Triton takes several --model-repository)."""
    from vdeploy.serve.triton_server import stop

    root = module_tmp.mktemp("repos")
    repos = []
    for name in [n for n in TASKS if (bundles / n).is_dir()]:
        r = run_cli("export-triton", bundles / name, root / name, "--name", name, "--max-batch-size", "4",
                    "--max-delay-us", str(DELAY_US))
        assert r.returncode == 0, r.stderr
        repos.append(root / name)
    log = root / "tritonserver.log"
    process, http, grpc = launch_triton_serve(repos, triton_env, log)
    children = [int(c) for c in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
    yield {"http": f"127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}", "log": log}
    began = time.monotonic()
    stop(process, timeout=90)  # SIGTERM by PID; vdeploy triton-serve stops its tritonserver before it exits
    print(f"triton-serve stopped in {time.monotonic() - began:.1f} s")
    assert process.returncode is not None
    assert children and not any(Path(f"/proc/{c}").exists() for c in children), "tritonserver outlived its parent"


def shapes_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((int(rng.integers(90, 160)), int(rng.integers(100, 200)), 3), 30, np.uint8)
    cv2.circle(img, (45, 50), 22, (0, 200, 0), -1)
    cv2.rectangle(img, (img.shape[1] - 60, 10), (img.shape[1] - 15, 55), (200, 0, 0), -1)
    return img


def infer(protocol, url, name, blob, tmp_path):
    if protocol == "grpc":
        if not HAVE_GRPC:
            pytest.skip("tritonclient[grpc] is not installed (pip install vdeploy[triton])")
        (tmp_path / "blob").write_bytes(blob)
        subprocess.run([sys.executable, "-c", GRPC_INFER, url, name, str(tmp_path / "blob"), str(tmp_path / "out.npz"),
                        ",".join(_outputs(name))], check=True, capture_output=True, timeout=300)
        with np.load(tmp_path / "out.npz", allow_pickle=True) as z:
            return {k: z[k] for k in z.files}
    module = httpclient
    client = module.InferenceServerClient(url)
    inp = module.InferInput("image", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[blob]], dtype=object))
    try:
        result = client.infer(name, [inp])
    finally:
        client.close()  # an open keep-alive connection holds Triton's shutdown for its exit timeout
    return {o: result.as_numpy(o) for o in _outputs(name)}


def _outputs(name):
    return ["boxes", "scores", "classes", "image_index", "masks"] if name in DETECTORS else ["label_map"]


def scene_image(seed: int, tmp_path) -> Path:
    """A generated shapes scene of the kind the demo's Mask R-CNN was trained on (held-out seed)."""
    from vdeploy.eval.synthetic import make_coco

    ann = make_coco(tmp_path / "scene", n=1, seed=seed, size=(240, 300), hard=True)
    return ann.parent / "images" / "0000.png"


def request_image(name, seed, tmp_path) -> Path:
    if name == "maskrcnn":
        return scene_image(seed, tmp_path)
    image = tmp_path / "shapes.png"
    cv2.imwrite(str(image), shapes_image(seed))
    return image


def vdeploy_predict(bundle, image_file, out):
    r = run_cli("predict", bundle, image_file, "--out", out, "--backend", "onnxruntime")
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("name", DETECTORS)
def test_detection_answers_equal_vdeploy_predict(triton, bundles, tmp_path, protocol, name):
    image = request_image(name, 1, tmp_path)
    want = json.loads(vdeploy_predict(bundles / name, image, tmp_path / "det.json").read_text())
    got = infer(protocol, triton[protocol], name, image.read_bytes(), tmp_path)
    classes = json.loads((bundles / name / "deploy.json").read_text())["classes"]

    boxes, scores, labels = got["boxes"][0], got["scores"][0], got["classes"][0]
    assert len(want) > 0 and boxes.shape == (len(want), 4) and set(got["image_index"][0]) == {0}
    for k, d in enumerate(sorted(want, key=lambda d: -d["score"])):  # both are in score order
        x1, y1, x2, y2 = boxes[k]
        np.testing.assert_allclose([x1, y1, x2 - x1, y2 - y1], d["bbox"], atol=1e-4)
        assert scores[k] == pytest.approx(d["score"], abs=1e-6)
        assert classes[labels[k]] == d["category_name"]
        assert json.loads(got["masks"][0][k]) == d["segmentation"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("name", ["seg", "segformer"])
def test_segmentation_answers_equal_vdeploy_predict(triton, bundles, tmp_path, protocol, name):
    need_bundle(bundles, name)
    image = tmp_path / "shapes.png"
    cv2.imwrite(str(image), shapes_image(2))
    out = vdeploy_predict(bundles / name, image, tmp_path / "maps")
    want = cv2.imread(str(out / "shapes.png"), cv2.IMREAD_UNCHANGED)
    got = infer(protocol, triton[protocol], name, image.read_bytes(), tmp_path)["label_map"]
    assert got.shape == (1, 1)
    label_map = cv2.imdecode(np.frombuffer(got[0, 0], np.uint8), cv2.IMREAD_UNCHANGED)
    assert label_map.shape == want.shape == shapes_image(2).shape[:2]
    np.testing.assert_array_equal(label_map, want)
    assert len(np.unique(want)) > 1  # a map with several classes in it, not one uniform answer


@pytest.mark.parametrize("name", list(TASKS))
def test_dynamic_batching_shows_in_triton_statistics(triton, bundles, name):
    need_bundle(bundles, name)
    client = httpclient.InferenceServerClient(triton["http"], concurrency=8)

    def stats():
        return client.get_inference_statistics(name)["model_stats"][0]

    before = stats()
    blob = cv2.imencode(".png", shapes_image(3))[1].tobytes()
    inp = httpclient.InferInput("image", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[blob]], dtype=object))
    pending = [client.async_infer(name, [inp]) for _ in range(8)]
    answers = [p.get_result(timeout=120) for p in pending]
    # Triton records an execution's statistics after its responses are sent: wait for them.
    deadline = time.monotonic() + 30
    while (after := stats())["inference_count"] - before["inference_count"] < 8 and time.monotonic() < deadline:
        time.sleep(0.2)
    client.close()
    assert all(a.as_numpy(_outputs(name)[0]) is not None for a in answers)
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 8 and executions < 8, (inferences, executions)
    assert max(int(b["batch_size"]) for b in after["batch_stats"]) > 1
    assert int(after["inference_stats"]["queue"]["count"]) >= 8


def test_a_bad_request_fails_alone(triton):
    client = httpclient.InferenceServerClient(triton["http"])
    for blobs, reason in [([[b"junk"]], "decodable"), ([[b"a"], [b"b"]], "one image per request")]:
        inp = httpclient.InferInput("image", [len(blobs), 1], "BYTES")
        inp.set_data_from_numpy(np.array(blobs, dtype=object))
        with pytest.raises(Exception, match=reason):
            client.infer("det", [inp])
    assert client.is_model_ready("det")
    client.close()


def test_bench_serve_sweeps_concurrency_against_triton(triton, tmp_path):
    image = tmp_path / "shapes.png"
    cv2.imwrite(str(image), shapes_image(4))
    out = tmp_path / "sweep.json"
    r = run_cli("bench", "--serve", f"http://{triton['http']}/v2/models/seg", "--concurrency", "1,2",
                "--duration", "2", "--images", image, "--json", out)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    assert [row["concurrency"] for row in rows] == [1, 2]
    for row in rows:
        assert row["errors"] == 0 and row["answers"] > 0 and row["throughput"] > 0
        lat = row["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        # Triton reports where the time went; these are its numbers, not ours
        assert row["server_ms"]["compute"] > 0 and row["server_ms"]["queue"] >= 0


def test_load_check_script_against_triton(triton, bundles, tmp_path):
    """benchmarks/triton_load.py end to end, briefly: its load against the running Triton and its
    `vdeploy bench` reference of the same bundle. No speed is asserted here (--min-ratio 0): the
    0.9x check is the script's own, run on a quiet machine (docs/serving.md, "Load check")."""
    image = tmp_path / "shapes.png"
    cv2.imwrite(str(image), shapes_image(5))
    out = tmp_path / "load.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "triton_load.py"), bundles / "seg", "--image", image,
                        "--url", f"http://{triton['http']}/v2/models/seg", "--clients", "4", "--duration", "2",
                        "--warmup", "1", "--bench-iters", "5", "--min-ratio", "0", "--json", out],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["verdict"] == "PASS" and r.stdout.startswith("PASS")
    load = report["load"]
    assert load["concurrency"] == 4 and load["errors"] == 0 and load["answers"] > 0
    assert len(report["bench_runs"]) == 2 and all(t > 0 for t in report["bench_runs"])
    assert report["ratio"] == pytest.approx(load["throughput"] / report["bench_throughput"])
    assert load["server_ms"]["compute"] > 0  # Triton's own statistics came through
