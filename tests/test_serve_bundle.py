"""`vdeploy serve` on a real bundle: the answers over HTTP are the Predictor's answers."""
import json
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from conftest import ROOT, run_cli

pytest.importorskip("kserve", reason="the serve extra (KServe's model server) is not installed")
http = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (dev extra) is not installed")
cv2 = pytest.importorskip("cv2")

from test_serve import Server, post  # noqa: E402


def test_served_bundle_answers_like_the_predictor(small_classifier_bundle):
    from vdeploy.runtime.predictor import Predictor
    from vdeploy.serve import BatchPolicy

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(70, 90), (100, 64), (64, 64)]]
    blobs = [cv2.imencode(".png", im)[1].tobytes() for im in images]
    reference = Predictor(small_classifier_bundle, "onnxruntime")
    want = np.stack([reference.predict(im).probs for im in images])
    with Server({"cls": Predictor(small_classifier_bundle, "onnxruntime")},
                policy=BatchPolicy(max_batch_size=4, max_delay_s=0.01)) as s:
        inp = http.InferInput("image", [3], "BYTES")
        inp.set_data_from_numpy(np.array(blobs, dtype=object))
        got = http.InferenceServerClient(s.url).infer("cls", [inp]).as_numpy("probs")
        status, _, body = post(f"{s.url}/predictions/cls", blobs[0])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert status == 200
    top = json.loads(body)["classes"][0]
    assert top["class_id"] == int(want[0].argmax()) and top["score"] == pytest.approx(float(want[0].max()), rel=1e-4)


def test_cli_serves_until_stopped_and_names_the_model_after_the_folder(small_classifier_bundle):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([sys.executable, "-m", "vdeploy", "serve", str(small_classifier_bundle.path), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(120):
            try:
                models = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models", timeout=2).read())
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                time.sleep(0.5)
        else:
            pytest.fail("server did not come up")
        assert models["models"] == [small_classifier_bundle.path.name]
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("args, message", [
    (["--name", "../x"], "invalid model name"),
    (["--name", "a", "--name", "b"], "2 --name for 1 bundles"),
    (["--port", "0"], "out of range"),
])
def test_cli_rejects_bad_options(small_classifier_bundle, args, message):
    r = run_cli("serve", small_classifier_bundle.path, *args)
    assert r.returncode == 2 and message in r.stderr


def test_cli_rejects_a_folder_that_is_not_a_bundle(tmp_path):
    r = run_cli("serve", tmp_path)
    assert r.returncode == 2 and "deploy.json" in r.stderr
