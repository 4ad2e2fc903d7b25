"""`vdeploy serve` over the fake detector of test_serve.py, as a process of its own, so that tests
hold real sockets to it, measure its memory and send it signals:

    python tests/serve_fake.py PORT '{"body_timeout_s": 1, "delay": 0.5, "policy": {"max_queue": 4}}'

The JSON holds ServeConfig fields, `policy` (BatchPolicy fields) and `delay` (seconds per backend
call). It runs vdeploy.serve.serve, the function the CLI runs. `running(...)` starts one for a test.
"""
import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextlib.contextmanager
def running(log_path: Path, **options):
    """(port, process) of a fake server on 127.0.0.1, its output in log_path; stopped on exit."""
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(port), json.dumps(options)],
                                cwd=HERE.parent, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited: {log_path.read_text()[-2000:]}")
                time.sleep(0.1)
        else:
            raise RuntimeError("the server did not come up in 30 s")
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def main() -> None:
    sys.path.insert(0, str(HERE))
    from test_serve import FakeDetector

    from vdeploy.serve import BatchPolicy, ServeConfig, serve

    port = int(sys.argv[1])
    options = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    delay = options.pop("delay", 0.0)
    policy = BatchPolicy(**options.pop("policy", {}))
    serve({"det": FakeDetector(delay=delay)}, ServeConfig(port=port, policy=policy, **options))


if __name__ == "__main__":
    main()
