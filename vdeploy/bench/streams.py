"""Throughput mode: several requests in flight at once, one thread each.

The engine splits the cores between the requests (OpenVINO's THROUGHPUT hint with NUM_STREAMS
streams, each thread with its own infer request; onnxruntime one session run from every thread,
intra-op threads = cores / streams), so samples/s can rise past 1 / latency where one request
leaves cores idle (small layers, pre/post-processing, Python). Both engines release the GIL
while they compute.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


def run_streams(work: Callable[[int], None], streams: int, warmup: int, iters: int) -> tuple[list[float], float]:
    """Each of `streams` threads runs `warmup` untimed then `iters` timed calls of `work(i)`;
    returns every timed call's latency (ms) and the wall time (s) of the timed part."""
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(streams + 1)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(warmup):
                work(k * 1000 + i)
        except BaseException as e:  # re-raised in the caller, after the barrier is released
            errors.append(e)
        barrier.wait()
        mine = []
        if not errors:
            try:
                for i in range(iters):
                    t0 = time.perf_counter()
                    work(k * 1000 + warmup + i)
                    mine.append((time.perf_counter() - t0) * 1e3)
            except BaseException as e:
                errors.append(e)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(streams)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return latencies, wall
