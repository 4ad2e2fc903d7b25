"""The server's limits, probed as an attacker and a careless client would, with real sockets on
127.0.0.1: decompression bombs, oversized batches, held uploads, silent connections, a connection
flood, SIGTERM with connections held; TorchServe's `curl -T` (a PUT); the palette PNG of
segmentation; errors as JSON with their status, one log line each, no traceback.

Processes of their own (tests/serve_fake.py) where memory, signals or the log are measured;
otherwise the in-thread server of test_serve.py.
"""
import http.client
import json
import shutil
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

pytest.importorskip("kserve", reason="the serve extra (KServe's model server) is not installed")
tc_http = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (dev extra) is not installed")
cv2 = pytest.importorskip("cv2")

from bombs import png_bomb  # noqa: E402
from serve_fake import running  # noqa: E402
from test_serve import FakeDetector, Server, get, infer, png, post  # noqa: E402

from vdeploy.runtime.prediction import Prediction  # noqa: E402
from vdeploy.runtime.preprocess import Prepared  # noqa: E402
from vdeploy.serve import BatchPolicy  # noqa: E402

SLOW_UPLOAD = b"POST /predictions/det HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc"


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it."""
    start, data = time.monotonic(), b""
    sock.settimeout(limit_s)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, time.monotonic() - start
            data += chunk
    except socket.timeout:
        pytest.fail(f"the connection was still open after {limit_s} s; got {data[:100]!r}")
    except ConnectionResetError:
        return data, time.monotonic() - start


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = png_bomb()  # 30000 x 30000, 875 KB: 900 MB once decoded
    assert len(bomb) < 900_000
    import base64

    v2_json = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                      "data": [base64.b64encode(bomb).decode()]}]}).encode()
    with running(tmp_path / "log") as (port, proc):
        url = f"127.0.0.1:{port}"
        answers = []

        def send(path, body):
            start = time.monotonic()
            status, _, text = post(url + path, body, {"Content-Type": "application/json"})
            answers.append((status, time.monotonic() - start, text))

        threads = [threading.Thread(target=send, args=args) for args in
                   [("/predictions/det", bomb)] * 3 + [("/v2/models/det/infer", v2_json)] * 2]
        [t.start() for t in threads]
        [t.join() for t in threads]
        start = time.monotonic()
        status, _, body = post(f"{url}/predictions/det", png(480, 640)[0])
        normal_s = time.monotonic() - start
        peak = peak_rss_mb(proc.pid)
    for status_, seconds, text in answers:
        assert status_ == 413 and b"limit of 50 MP" in text, text
        # a bound on hanging, not a speed target: the header check answers in milliseconds
        assert seconds < 2.0, f"the bomb took {seconds:.2f} s to refuse"
    assert status == 200 and json.loads(body)["image_size"] == [480, 640]
    assert normal_s < 5.0
    assert peak < 1024, f"the server's memory peaked at {peak:.0f} MB"


def test_the_pixel_limit_is_configurable_and_applies_to_both_routes():
    with Server({"det": FakeDetector()}, max_image_pixels=1000) as s:
        status, _, text = post(f"{s.url}/predictions/det", png(40, 40)[0])
        assert status == 413 and b"40x40 pixels" in text, text
        assert post(f"{s.url}/predictions/det", png(20, 30)[0])[0] == 200
        with pytest.raises(Exception, match=r"\[413\]"):
            infer(tc_http.InferenceServerClient(s.url), "det", [png(8, 8)[0], png(50, 50)[0]])


def test_a_batch_larger_than_the_queue_can_hold_gets_413_not_503():
    with Server({"det": FakeDetector()}, policy=BatchPolicy(max_batch_size=4, max_queue=4)) as s:
        c = tc_http.InferenceServerClient(s.url)
        with pytest.raises(Exception, match=r"\[413\].*5 images in one request.*at most 4"):
            infer(c, "det", [png(8, 8, i)[0] for i in range(5)])
        assert infer(c, "det", [png(8, 8, i)[0] for i in range(4)]).as_numpy("boxes").shape == (4, 4)


def test_a_held_slow_upload_is_answered_408_and_dropped(tmp_path):
    with running(tmp_path / "log", body_timeout_s=1.0) as (port, _):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(SLOW_UPLOAD)  # Content-Length 100000, 3 bytes sent
            answer, closed_after = read_until_closed(sock, 10)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"request body not received within 1 s" in answer
        assert 0.9 < closed_after < 6
        assert get(f"127.0.0.1:{port}/v2/health/ready")[0] == 200


def test_connections_that_never_complete_a_request_head_are_closed(tmp_path):
    with running(tmp_path / "log", header_timeout_s=1.0, keep_alive_s=1.0) as (port, _):
        silent = socket.create_connection(("127.0.0.1", port))
        dripping = socket.create_connection(("127.0.0.1", port))
        dripping.sendall(b"GET /ping HTTP/1.1\r\nHo")
        for sock in (silent, dripping):
            answer, closed_after = read_until_closed(sock, 10)
            assert answer == b"" and closed_after < 6
            sock.close()
        # an answered keep-alive connection left idle is closed too
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/ping")
        assert conn.getresponse().read() == b'{"status":"Healthy"}'
        assert read_until_closed(conn.sock, 10)[0] == b""
        conn.close()


def test_a_request_head_over_the_size_limit_is_refused():
    with Server({"det": FakeDetector()}) as s:
        status, _ = get(f"{s.url}/ping", {"X-Padding": "x" * (64 << 10)})  # arriving in one read
        assert status == 431
        with socket.create_connection(("127.0.0.1", s.port)) as sock:  # arriving piece by piece
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
            try:
                for _ in range(40):
                    sock.sendall(b"X-Padding: " + b"x" * 1000 + b"\r\n")
                    time.sleep(0.005)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused and closed before the head was over
            answer, _ = read_until_closed(sock, 10)
        assert answer == b"" or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), answer[:100]
        assert get(f"{s.url}/ping")[0] == 200
        assert get(f"{s.url}/ping")[0] == 200


def test_connections_past_the_cap_get_503():
    with Server({"det": FakeDetector()}, max_connections=3, header_timeout_s=30) as s:
        held = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(3)]
        time.sleep(0.2)
        try:
            assert get(f"{s.url}/ping")[0] == 503
        finally:
            [h.close() for h in held]
        time.sleep(0.2)
        assert get(f"{s.url}/ping")[0] == 200


def test_sigterm_exits_within_the_shutdown_deadline_with_connections_held(tmp_path):
    long = dict(header_timeout_s=60, body_timeout_s=60, keep_alive_s=60)
    with running(tmp_path / "log", shutdown_timeout_s=1.0, delay=8.0, **long) as (port, proc):
        upload = socket.create_connection(("127.0.0.1", port))
        upload.sendall(SLOW_UPLOAD)
        silent = socket.create_connection(("127.0.0.1", port))
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        idle.request("GET", "/ping")
        idle.getresponse().read()
        slow_answer = []  # a request whose inference (8 s) outlasts the deadline
        slow = threading.Thread(target=lambda: slow_answer.append(post(f"127.0.0.1:{port}/predictions/det",
                                                                       png(8, 8)[0])))
        slow.start()
        time.sleep(0.5)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        exited_after = time.monotonic() - start
        upload_answer, _ = read_until_closed(upload, 5)
        slow.join(10)
        for sock in (upload, silent):
            sock.close()
    log = (tmp_path / "log").read_text()
    # the deadline (1 s) and the in-flight backend call's thread being let go; far below its 8 s
    assert exited_after < 5, f"exited {exited_after:.1f} s after SIGTERM"
    assert upload_answer.startswith(b"HTTP/1.1 503") and b"shutting down" in upload_answer
    assert slow_answer and slow_answer[0][0] == 503, slow_answer
    assert "Traceback" not in log, log


def test_sigterm_lets_a_request_in_progress_finish(tmp_path):
    with running(tmp_path / "log", shutdown_timeout_s=10.0, delay=1.0) as (port, proc):
        answer = []
        t = threading.Thread(target=lambda: answer.append(post(f"127.0.0.1:{port}/predictions/det", png(8, 8)[0])))
        t.start()
        time.sleep(0.4)
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        t.join(10)
    assert answer and answer[0][0] == 200 and json.loads(answer[0][2])["detections"]


def test_put_on_predictions_works_as_curl_T_sends_it(tmp_path):
    blob, _ = png(16, 24, 3)
    with Server({"det": FakeDetector()}) as s:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        conn.request("PUT", "/predictions/det", body=blob, headers={"Expect": "100-continue"})
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["detections"][0]["bbox"] == [0, 0, 24, 16]
        conn.close()
        if shutil.which("curl"):  # TorchServe's documented command, verbatim
            img, out = tmp_path / "img.png", tmp_path / "out.json"
            img.write_bytes(blob)
            code = subprocess.run(["curl", "-sS", f"http://{s.url}/predictions/det", "-T", str(img), "-o", str(out),
                                   "-w", "%{http_code}"], capture_output=True, text=True, timeout=30).stdout
            assert code == "200" and json.loads(out.read_text())["image_size"] == [16, 24]


def test_an_oversized_body_announced_with_expect_continue_is_refused_before_it_is_sent():
    with Server({"det": FakeDetector()}, max_body_bytes=1 << 20) as s:
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.sendall(b"PUT /predictions/det HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n"
                         b"Expect: 100-continue\r\n\r\n")
            answer, _ = read_until_closed(sock, 10)
        assert answer.startswith(b"HTTP/1.1 413") and b"100 Continue" not in answer


@pytest.mark.parametrize("method, path, body, want", [
    ("GET", "/predictions/det", None, 405),
    ("DELETE", "/predictions/det", None, 405),
    ("PUT", "/predictions/det", b"not an image", 400),
    ("PUT", "/predictions/nope", b"x", 404),
    ("GET", "/no/such/route", None, 404),
    ("POST", "/v2/models/det/versions/1/infer", b"{}", 404),
    ("GET", "/v2/models/det/versions/1", None, 404),
])
def test_errors_are_json_with_their_status_never_a_200(method, path, body, want):
    with Server({"det": FakeDetector()}) as s:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        conn.request(method, path, body=body)
        r = conn.getresponse()
        text = r.read()
        assert r.status == want and r.getheader("content-type") == "application/json", text
        assert set(json.loads(text)) == {"error"}
        if want == 405:
            assert "POST" in r.getheader("allow") and "PUT" in r.getheader("allow")


class FakeSegmenter:
    """Label map: class (row + col) % 3 over the image."""

    task = "semantic_segmentation"
    classes = ["background", "road", "car"]
    backend_name = "fake"
    spec = {"task": task, "classes": classes, "batchable": False}

    def preprocess(self, image):
        return Prepared({"x": np.array([image.shape[:2]], np.float32)}, {})

    def infer(self, inputs):
        return {"out": inputs["x"]}

    def postprocess(self, raw, meta):
        h, w = (int(v) for v in raw["out"][0])
        return Prediction("semantic_segmentation", (h, w), label_map=expected_label_map(h, w))


def expected_label_map(h, w):
    return (np.add.outer(np.arange(h), np.arange(w)) % 3).astype(np.int32)


def test_segmentation_answers_a_palette_png_of_class_indices():
    import io

    from PIL import Image

    with Server({"seg": FakeSegmenter()}) as s:
        status, headers, body = post(f"{s.url}/predictions/seg", png(12, 20)[0])
    assert status == 200 and headers.get("Content-Type") == "image/png"
    im = Image.open(io.BytesIO(body))
    assert im.mode == "P" and im.size == (20, 12)
    np.testing.assert_array_equal(np.asarray(im), expected_label_map(12, 20))
    colours = np.asarray(im.getpalette()[:9]).reshape(3, 3)
    assert len({tuple(c) for c in colours}) == 3 and colours.min(axis=1).max() > 0  # distinct, not near-black
    shown = np.asarray(im.convert("RGB"))
    assert len(np.unique(shown.reshape(-1, 3), axis=0)) == 3  # a viewer shows three colours


def test_each_client_error_is_one_log_line_without_a_traceback(tmp_path):
    with running(tmp_path / "log", body_timeout_s=1.0, max_body_bytes=1 << 20) as (port, proc):
        url = f"127.0.0.1:{port}"
        bad = [("/predictions/det", b"not an image"), ("/predictions/det", png_bomb()),
               ("/predictions/nope", b"x"), ("/v2/models/det/infer", b"{not json"),
               ("/v2/models/det/infer", b'{"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1]}]}'),
               ("/predictions/det", b"x" * (2 << 20))]
        for path, body in bad:
            assert 400 <= post(url + path, body)[0] < 500
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(SLOW_UPLOAD)
            read_until_closed(sock, 10)
        assert get(f"{url}/predictions/det")[0] == 405
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    log = (tmp_path / "log").read_text()
    lines = [line for line in log.splitlines() if '" 4' in line]
    assert len(lines) == len(bad) + 2, log
    assert [line.split('" ')[1][:3] for line in lines] == ["400", "413", "404", "400", "400", "413", "408", "405"]
    assert "Traceback" not in log and "Exception" not in log, log
