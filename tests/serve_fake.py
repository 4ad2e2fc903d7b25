"""`vdeploy serve` over the fake detector of test_serve.py, as a process of its own, so that tests
hold real sockets to it, measure its memory and send it signals:

    python tests/serve_fake.py PORT '{"body_timeout_s": 1, "delay": 0.5, "policy": {"max_queue": 4}}'

The JSON holds ServeConfig fields, `policy` (BatchPolicy fields) and `delay` (seconds per backend
call). It runs vdeploy.serve.serve, the function the CLI runs.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_serve import FakeDetector  # noqa: E402

from vdeploy.serve import BatchPolicy, ServeConfig, serve  # noqa: E402


def main() -> None:
    port = int(sys.argv[1])
    options = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    delay = options.pop("delay", 0.0)
    policy = BatchPolicy(**options.pop("policy", {}))
    print("starting", flush=True)
    serve({"det": FakeDetector(delay=delay)}, ServeConfig(port=port, policy=policy, **options))


if __name__ == "__main__":
    main()
