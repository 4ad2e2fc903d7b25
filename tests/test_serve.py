"""The HTTP server, driven by real clients (tritonclient over HTTP, urllib) on 127.0.0.1.

A fake predictor stands in for a model here so that every answer is known exactly, batching is
observable and a slow or failing backend can be simulated; test_serve_bundle.py runs a real bundle.
"""
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("kserve", reason="the serve extra (KServe's model server) is not installed")
http = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (dev extra) is not installed")
cv2 = pytest.importorskip("cv2")

from vdeploy.runtime.prediction import Prediction  # noqa: E402
from vdeploy.runtime.preprocess import Prepared  # noqa: E402
from vdeploy.serve import BatchPolicy, ServeConfig, build_app  # noqa: E402
from vdeploy.serve.names import is_valid_model_name  # noqa: E402


class FakeDetector:
    """One box per image covering it, scored by the mean pixel; refuses concurrent infer calls."""

    task = "detection"
    classes = ["cat", "dog"]
    backend_name = "fake"

    def __init__(self, batchable=True, delay=0.0, fail=False):
        self.spec = {"task": self.task, "classes": self.classes, "batchable": batchable}
        self.delay, self.fail = delay, fail
        self.batch_sizes = []
        self._busy = threading.Lock()

    def preprocess(self, image):
        h, w = image.shape[:2]
        return Prepared({"x": np.array([[h, w, image.mean()]], np.float32)}, {})

    def infer(self, inputs):
        if not self._busy.acquire(blocking=False):
            raise AssertionError("infer entered from two threads at once")
        try:
            time.sleep(self.delay)
            if self.fail:
                raise RuntimeError("backend exploded")
            self.batch_sizes.append(len(inputs["x"]))
            return {"out": inputs["x"].copy()}
        finally:
            self._busy.release()

    def postprocess(self, raw, meta):
        h, w, m = raw["out"][0]
        return expected(int(h), int(w), float(m))


def expected(h, w, mean):
    return Prediction("detection", (h, w), boxes=np.array([[0, 0, w, h]], np.float32),
                      scores=np.array([mean / 255], np.float32), classes=np.array([1]))


def png(h, w, seed=0):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".png", img)[1].tobytes(), img


class Server:
    """uvicorn in a thread, on a free port of 127.0.0.1."""

    def __init__(self, predictors, **config):
        from vdeploy.serve.server import make_server

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        config = ServeConfig(port=self.port, **{"log_level": "warning", **config})
        self.server = make_server(build_app(predictors, config), config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def post(url, body, headers=None, timeout=30):
    """(status, headers, body) of a POST; HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(f"http://{url}", data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get(url, headers=None):
    req = urllib.request.Request(f"http://{url}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def infer(client, model, blobs):
    inp = http.InferInput("image", [len(blobs)], "BYTES")
    inp.set_data_from_numpy(np.array(blobs, dtype=object))
    return client.infer(model, [inp])


@pytest.fixture(scope="module")
def server():
    with Server({"det": FakeDetector()}, policy=BatchPolicy(max_batch_size=4, max_delay_s=0.02),
                max_body_bytes=1 << 20) as s:
        yield s


def test_tritonclient_gets_the_predictions_of_every_image(server):
    (a, img_a), (b, img_b) = png(30, 50, 1), png(40, 20, 2)
    r = infer(http.InferenceServerClient(server.url), "det", [a, b])
    np.testing.assert_allclose(r.as_numpy("boxes"), [[0, 0, 50, 30], [0, 0, 20, 40]])
    np.testing.assert_allclose(r.as_numpy("scores"), [img_a.mean() / 255, img_b.mean() / 255], rtol=1e-5)
    assert r.as_numpy("classes").tolist() == [1, 1] and r.as_numpy("classes").dtype == np.int32
    assert r.as_numpy("image_index").tolist() == [0, 1]


def test_health_metadata_and_model_list(server):
    c = http.InferenceServerClient(server.url)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("det")
    meta = c.get_model_metadata("det")
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in meta["outputs"]] == ["boxes", "scores", "classes", "image_index"]
    assert json.loads(get(f"{server.url}/v2/models")[1])["models"] == ["det"]
    assert get(f"{server.url}/ping")[0] == 200


def test_torchserve_route_answers_json(server):
    blob, img = png(16, 24, 3)
    status, headers, body = post(f"{server.url}/predictions/det", blob)
    assert status == 200, body
    det, = json.loads(body)["detections"]
    assert det["class_name"] == "dog" and det["bbox"] == [0, 0, 24, 16]
    assert det["score"] == pytest.approx(img.mean() / 255, rel=1e-5)


def test_render_returns_a_drawing_of_the_image_size(server):
    blob, _ = png(16, 24, 3)
    status, headers, body = post(f"{server.url}/predictions/det?render=1", blob)
    assert status == 200 and headers.get("Content-Type") == "image/png"
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (16, 24, 3)


@pytest.mark.parametrize("path, body, want", [
    ("/predictions/det", b"not an image", 400),
    ("/predictions/det", b"", 400),
    ("/predictions/det", b"x" * (3 << 20), 413),
    ("/predictions/nope", b"", 404),
    ("/predictions/..%2Fx", b"", 404),
    ("/predictions/%2E%2E", b"", 400),
    ("/v2/models/..%2Fdet/infer", b"{}", 404),
    ("/v2/models/det/infer", b"{not json", 400),
    ("/v2/repository/models/det/unload", b"", 403),
    ("/v2/repository/models/..%2F..%2Fetc/load", b"", 403),
])
def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, path, body, want):
    status, _, answer = post(server.url + path, body)
    assert status == want, answer
    assert get(f"{server.url}/v2/health/live")[0] == 200
    assert infer(http.InferenceServerClient(server.url), "det", [png(8, 8)[0]]).as_numpy("boxes").shape == (1, 4)


def test_bad_v2_tensors_get_400(server):
    c = http.InferenceServerClient(server.url)
    wrong_type = http.InferInput("image", [1], "FP32")
    wrong_type.set_data_from_numpy(np.zeros(1, np.float32))
    garbage = http.InferInput("image", [2], "BYTES")
    garbage.set_data_from_numpy(np.array([png(8, 8)[0], b"\x89PNG broken"], dtype=object))
    for inputs in ([wrong_type], [garbage]):
        with pytest.raises(Exception, match=r"\[400\]"):
            c.infer("det", inputs)
    # the binary header promising more bytes than the body has
    head = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": 999}}]}).encode()
    status, _, _ = post(f"{server.url}/v2/models/det/infer", head + b"abc",
                        {"Inference-Header-Content-Length": str(len(head))})
    assert status == 400


def test_json_clients_send_base64(server):
    import base64

    blob, _ = png(12, 10, 4)
    req = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(blob).decode()]}]}
    status, _, body = post(f"{server.url}/v2/models/det/infer", json.dumps(req).encode(), {"Content-Type": "application/json"})
    assert status == 200, body
    boxes = next(o for o in json.loads(body)["outputs"] if o["name"] == "boxes")
    assert boxes["shape"] == [1, 4] and boxes["data"] == [0, 0, 10, 12]


def test_concurrent_requests_are_batched_through_one_thread():
    fake = FakeDetector(delay=0.05)
    with Server({"det": fake}, policy=BatchPolicy(max_batch_size=4, max_delay_s=0.05)) as s:
        blobs = [png(10 + i, 10, i) for i in range(12)]
        results = [None] * len(blobs)

        def client(i):
            results[i] = infer(http.InferenceServerClient(s.url), "det", [blobs[i][0]]).as_numpy("boxes")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(blobs))]
        [t.start() for t in threads]
        [t.join() for t in threads]
        metrics = get(f"{s.url}/metrics")[1].decode()
    for i, boxes in enumerate(results):  # every client got its own image's answer
        np.testing.assert_allclose(boxes, [[0, 0, 10, 10 + i]])
    assert sum(fake.batch_sizes) == 12 and max(fake.batch_sizes) > 1 and max(fake.batch_sizes) <= 4
    assert 'vdeploy_batch_size_count{model="det"}' in metrics
    assert 'vdeploy_requests_total{code="200",endpoint="v2_infer",model="det"} 12.0' in metrics
    assert "vdeploy_request_latency_seconds_bucket" in metrics


def test_a_model_without_batching_gets_one_image_per_call():
    fake = FakeDetector(batchable=False, delay=0.02)
    with Server({"det": fake}, policy=BatchPolicy(max_batch_size=8, max_delay_s=0.05)) as s:
        threads = [threading.Thread(target=post, args=(f"{s.url}/predictions/det", png(8, 8, i)[0])) for i in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert fake.batch_sizes == [1, 1, 1, 1]


def test_a_full_queue_answers_503_with_retry_after():
    with Server({"det": FakeDetector(delay=1.0)}, policy=BatchPolicy(max_queue=1)) as s:
        slow = threading.Thread(target=post, args=(f"{s.url}/predictions/det", png(8, 8)[0]))
        slow.start()
        time.sleep(0.3)
        status, headers, _ = post(f"{s.url}/predictions/det", png(8, 8)[0])
        slow.join()
        assert status == 503 and headers.get("Retry-After") == "1"
        assert post(f"{s.url}/predictions/det", png(8, 8)[0])[0] == 200  # admitted again once drained


def test_a_slow_request_times_out_with_504_and_a_backend_error_is_contained():
    with Server({"slow": FakeDetector(delay=0.6), "broken": FakeDetector(fail=True)},
                policy=BatchPolicy(timeout_s=0.2)) as s:
        assert post(f"{s.url}/predictions/slow", png(8, 8)[0])[0] == 504
        assert post(f"{s.url}/predictions/broken", png(8, 8)[0])[0] == 500
        assert get(f"{s.url}/v2/health/ready")[0] == 200


def test_bearer_token_guards_everything_but_health():
    token = "s3cret"
    with Server({"det": FakeDetector()}, token=token) as s:
        assert get(f"{s.url}/v2/health/live")[0] == 200 and get(f"{s.url}/v2/health/ready")[0] == 200
        for path in ("/metrics", "/v2/models", "/v2/models/det"):
            assert get(s.url + path)[0] == 401
            assert get(s.url + path, {"Authorization": "Bearer wrong"})[0] == 401
        assert post(f"{s.url}/predictions/det", png(8, 8)[0])[0] == 401
        c = http.InferenceServerClient(s.url)
        with pytest.raises(Exception, match="401"):
            infer(c, "det", [png(8, 8)[0]])
        inp = http.InferInput("image", [1], "BYTES")
        inp.set_data_from_numpy(np.array([png(8, 8)[0]], dtype=object))
        r = c.infer("det", [inp], headers={"Authorization": f"Bearer {token}"})
        assert r.as_numpy("boxes").shape == (1, 4)


@pytest.mark.parametrize("name, ok", [("mask_rcnn", True), ("r50.v2-b", True), ("../x", False), ("..", False),
                                      ("a/b", False), (".hidden", False), ("a%2Fb", False), ("", False),
                                      ("x" * 65, False)])
def test_model_names_are_validated(name, ok):
    assert is_valid_model_name(name) is ok


def test_build_app_rejects_an_invalid_model_name():
    from vdeploy.errors import UserError

    with pytest.raises(UserError, match="invalid model name"):
        build_app({"../x": FakeDetector()}, ServeConfig())
