"""Load test of `vdeploy serve` on this machine: N tritonclient clients for a fixed time.

    python benchmarks/serve_load.py --serve BUNDLE --image IMG [--clients 8] [--duration 60]
    python benchmarks/serve_load.py --port 8080 --model NAME --image IMG

Reports requests answered, errors by status, lost requests (sent but never answered),
throughput and latency percentiles; `--json` writes them. Talks to 127.0.0.1 only, and the run
is bounded (at most 10 minutes).
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

MAX_DURATION_S = 600


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_server(bundle: str, port: int, extra: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "vdeploy", "serve", bundle, "--host", "127.0.0.1",
                             "--port", str(port), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-500:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2)
            return proc
        except OSError:
            time.sleep(1)
    proc.terminate()
    raise SystemExit("server did not become ready in 300 s")


def run_load(url: str, model: str, blob: bytes, clients: int, duration: float) -> dict:
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    stop = time.perf_counter() + duration
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[dict] = [{} for _ in range(clients)]
    sent = [0] * clients

    def client(k: int) -> None:
        c = http.InferenceServerClient(url, connection_timeout=120, network_timeout=120)
        inp = http.InferInput("image", [1], "BYTES")
        inp.set_data_from_numpy(np.array([blob], dtype=object))
        while time.perf_counter() < stop:
            sent[k] += 1
            t0 = time.perf_counter()
            try:
                c.infer(model, [inp])
                latencies[k].append(time.perf_counter() - t0)
            except InferenceServerException as e:
                key = str(e.status() or "no status")
                errors[k][key] = errors[k].get(key, 0) + 1
            except Exception as e:  # connection errors: counted, never fatal to the run
                errors[k][type(e).__name__] = errors[k].get(type(e).__name__, 0) + 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    wall = time.perf_counter() - t0
    lat = np.array([x for per in latencies for x in per]) * 1000
    merged: dict[str, int] = {}
    for per in errors:
        for k, v in per.items():
            merged[k] = merged.get(k, 0) + v
    answered = len(lat) + sum(merged.values())
    return {
        "clients": clients, "duration_s": round(wall, 2), "ok": int(len(lat)), "errors": merged,
        "server_errors_5xx": sum(v for k, v in merged.items() if k.startswith("5")),
        "lost": sum(sent) - answered, "throughput_rps": round(len(lat) / wall, 3),
        "latency_ms": {p: round(float(np.percentile(lat, q)), 1) if len(lat) else None
                       for p, q in [("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)]},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", metavar="BUNDLE", help="start `vdeploy serve BUNDLE` on a free local port for the run")
    p.add_argument("--serve-args", default="", help="extra `vdeploy serve` options, space-separated")
    p.add_argument("--port", type=int, help="port of a server already running on 127.0.0.1")
    p.add_argument("--model", help="model name (default: the bundle's folder name)")
    p.add_argument("--image", required=True)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    if not 0 < args.duration <= MAX_DURATION_S:
        p.error(f"--duration must be in (0, {MAX_DURATION_S}]")
    if bool(args.serve) == bool(args.port):
        p.error("give --serve BUNDLE or --port PORT")
    model = args.model or (Path(args.serve).resolve().name if args.serve else None)
    if not model:
        p.error("--model is needed with --port")
    port = args.port or free_port()
    proc = start_server(args.serve, port, args.serve_args.split()) if args.serve else None
    try:
        report = run_load(f"127.0.0.1:{port}", model, Path(args.image).read_bytes(), args.clients, args.duration)
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=10)
        report["alive_after"] = True
    finally:
        if proc:
            proc.terminate()
            proc.wait(30)
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0 if report["server_errors_5xx"] == 0 and report["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
