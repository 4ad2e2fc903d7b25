"""A concurrency sweep against a running server, as Triton's perf_analyzer reports it.

For each concurrency C, C clients each send one request at a time (closed loop) over the Open
Inference Protocol (tritonclient HTTP), so the same sweep runs against `vdeploy serve` and Triton.
Each level runs a fixed time after a warm-up, bounded by a request count too. Reported per level:
throughput (answers/s), client latency p50/p90/p99, errors, and, where the server answers the
statistics extension (Triton's /v2/models/{m}/stats), its mean queue and compute time per request.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import numpy as np

from ..errors import UserError

MAX_REQUESTS_PER_LEVEL = 100_000


@dataclass
class SweepConfig:
    url: str                     # http://HOST:PORT
    model: str | None
    concurrency: list[int]
    duration_s: float = 10.0
    warmup_s: float = 2.0
    image: bytes = b""


def split_url(url: str) -> tuple[str, str | None]:
    """http://HOST:PORT[/v2/models/NAME] -> (HOST:PORT, NAME or None)."""
    parsed = urllib.parse.urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme != "http" or not parsed.netloc:
        raise UserError(f"--serve wants http://HOST:PORT[/v2/models/NAME], got {url!r}")
    parts = [p for p in parsed.path.split("/") if p]
    model = parts[2] if len(parts) >= 3 and parts[:2] == ["v2", "models"] else None
    return parsed.netloc, model


def _get(base: str, path: str, method: str = "GET"):
    req = urllib.request.Request(f"http://{base}{path}", method=method, data=b"{}" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def pick_model(base: str) -> str:
    """The one model a server serves (Triton's repository index); otherwise the user names it."""
    try:
        ready = [m["name"] for m in _get(base, "/v2/repository/index", "POST") if m.get("state") == "READY"]
    except (OSError, ValueError, urllib.error.HTTPError):
        ready = []
    if len(set(ready)) != 1:
        raise UserError(f"name the model to bench: --model NAME (or --serve http://{base}/v2/models/NAME)")
    return ready[0]


def server_stats(base: str, model: str) -> dict | None:
    """Cumulative success / queue / compute counters, or None where the server has no statistics."""
    try:
        s = _get(base, f"/v2/models/{urllib.parse.quote(model)}/stats")["model_stats"][0]["inference_stats"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    ns = {k: int(s.get(k, {}).get("ns", 0)) for k in ("queue", "compute_input", "compute_infer", "compute_output")}
    return {"count": int(s.get("success", {}).get("count", 0)), **ns}


def run_sweep(cfg: SweepConfig) -> list[dict]:
    import tritonclient.http as http

    base, model = split_url(cfg.url)
    model = cfg.model or model or pick_model(base)
    try:
        meta = _get(base, f"/v2/models/{urllib.parse.quote(model)}")
    except OSError as e:
        raise UserError(f"http://{base}: no model {model!r} answers its metadata ({e})") from None
    # vdeploy serve takes image [B]; Triton's export has max_batch_size, so [B, 1]
    shape = [1] * max(1, len(meta["inputs"][0]["shape"]))
    blob = np.array([cfg.image], dtype=object).reshape(shape)
    return [_level(http, base, model, blob, c, cfg) for c in cfg.concurrency]


def _level(http, base, model, blob, clients: int, cfg: SweepConfig) -> dict:
    start = time.perf_counter()
    measure_from = start + cfg.warmup_s
    stop_at = measure_from + cfg.duration_s
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stats = {}
    sent = [0]
    lock = threading.Lock()

    def client(k: int) -> None:
        c = http.InferenceServerClient(base, connection_timeout=120, network_timeout=120)
        inp = http.InferInput("image", list(blob.shape), "BYTES")
        inp.set_data_from_numpy(blob)
        try:
            while True:
                with lock:
                    if time.perf_counter() >= stop_at or sent[0] >= MAX_REQUESTS_PER_LEVEL:
                        return
                    sent[0] += 1
                t0 = time.perf_counter()
                try:
                    c.infer(model, [inp])
                    ok = True
                except Exception:  # counted, never retried: the sweep reports what the server did
                    ok = False
                t1 = time.perf_counter()
                if not ok:
                    errors[k] += 1  # warm-up included: an error is an error
                elif t0 >= measure_from:
                    latencies[k].append(t1 - t0)
        finally:
            c.close()

    def snapshot_after_warmup():
        time.sleep(max(0.0, measure_from - time.perf_counter()))
        stats["before"] = server_stats(base, model)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    watcher = threading.Thread(target=snapshot_after_warmup, daemon=True)
    for t in [watcher, *threads]:
        t.start()
    for t in [watcher, *threads]:
        t.join(cfg.warmup_s + cfg.duration_s + 300)
    window = time.perf_counter() - measure_from
    after = server_stats(base, model)
    lat = np.array([x for per in latencies for x in per]) * 1000
    row = {"url": f"http://{base}", "model": model, "concurrency": clients, "answers": int(lat.size),
           "errors": int(sum(errors)), "duration_s": round(window, 3),
           "throughput": lat.size / window if window > 0 else 0.0,
           "latency_ms": {k: float(np.percentile(lat, q)) if lat.size else float("nan")
                          for k, q in (("p50", 50), ("p90", 90), ("p99", 99))}}
    before = stats.get("before")
    if before and after and after["count"] > before["count"]:
        # requests that finished in the window, a few of them queued during warm-up: close enough to per-request means
        n = after["count"] - before["count"]
        row["server_ms"] = {"queue": (after["queue"] - before["queue"]) / n / 1e6,
                            "compute": sum(after[k] - before[k] for k in ("compute_input", "compute_infer",
                                                                         "compute_output")) / n / 1e6}
    return row


def print_sweep(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="vdeploy bench --serve")
    for c in ("model", "concurrency", "answers", "errors", "answers/s", "p50 ms", "p90 ms", "p99 ms",
              "server queue ms", "server compute ms"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for r in rows:
        lat, srv = r["latency_ms"], r.get("server_ms")
        t.add_row(r["model"], str(r["concurrency"]), str(r["answers"]), str(r["errors"]), f"{r['throughput']:.2f}",
                  f"{lat['p50']:.1f}", f"{lat['p90']:.1f}", f"{lat['p99']:.1f}",
                  f"{srv['queue']:.1f}" if srv else "-", f"{srv['compute']:.1f}" if srv else "-")
    Console(width=160).print(t)
