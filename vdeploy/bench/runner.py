"""Latency and throughput of each backend, each measured in a fresh process of its own.

A fresh process per backend keeps their thread pools from competing and makes `peak_rss_mb`
that backend's own peak. Warm-up iterations are excluded; statistics are over the timed ones.
"""
from __future__ import annotations

import multiprocessing as mp
import resource
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ..errors import UserError


@dataclass
class BenchConfig:
    source: str
    backend: str
    batch: int = 1
    mode: str = "pure"            # pure: the model alone; e2e: decode + pre + infer + post
    iters: int = 20
    warmup: int = 3
    threads: Optional[int] = None
    image_size: Optional[tuple[int, int]] = None  # synthetic images; None: the bundle's or the task's
    images: Sequence[str] = field(default_factory=tuple)
    weights: Optional[str] = None
    streams: int = 0              # >0: throughput mode, this many requests in flight (streams.py)


def _stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "min": float(a.min())}


def _default_hw(predictor) -> tuple[int, int]:
    if predictor.input_size:
        return tuple(predictor.input_size)
    from ..runtime.tasks import get_task

    return get_task(predictor.task).bench_hw


def _encoded_images(cfg: BenchConfig, predictor) -> list[bytes]:
    import cv2

    if cfg.images:
        return [open(p, "rb").read() for p in cfg.images]
    from ..runtime.synthetic import synthetic_image

    h, w = cfg.image_size or _default_hw(predictor)
    return [cv2.imencode(".jpg", synthetic_image(h, w, seed=s))[1].tobytes() for s in range(4)]


def _run_one(cfg: BenchConfig) -> dict:
    from ..runtime.sources import open_source
    from ..runtime.io import decode_image
    from ..runtime.preprocess import stack

    extra = {"streams": cfg.streams} if cfg.streams else {}
    predictor = open_source(cfg.source, cfg.weights, cfg.backend, input_size=None, threads=cfg.threads, **extra).load()
    if cfg.batch > 1 and not predictor.spec.get("batchable"):
        return {"backend": predictor.backend_name, "batch": cfg.batch, "mode": cfg.mode, "skipped": "the graph takes one image per call"}
    encoded = _encoded_images(cfg, predictor)
    if cfg.streams:
        return _run_streams(cfg, predictor, encoded)
    timings, stages = [], {"decode": [], "preprocess": [], "infer": [], "postprocess": []}
    if cfg.mode == "pure":
        from ..runtime.synthetic import synthetic_image

        h, w = cfg.image_size or _default_hw(predictor)
        feed = stack([predictor.preprocess(synthetic_image(h, w, seed=0))] * cfg.batch)
        for i in range(cfg.warmup + cfg.iters):
            t0 = time.perf_counter()
            predictor.infer(feed)
            if i >= cfg.warmup:
                timings.append((time.perf_counter() - t0) * 1e3)
    elif cfg.mode == "e2e":
        for i in range(cfg.warmup + cfg.iters):
            batch = [encoded[(i * cfg.batch + k) % len(encoded)] for k in range(cfg.batch)]
            t0 = time.perf_counter()
            imgs = [decode_image(b) for b in batch]
            t1 = time.perf_counter()
            preps = [predictor.preprocess(im) for im in imgs]
            t2 = time.perf_counter()
            if len(preps) == 1:
                raws = [predictor.infer(preps[0].inputs)]
            else:
                raw = predictor.infer(stack(preps))
                raws = [{k: v[j:j + 1] for k, v in raw.items()} for j in range(len(preps))]
            t3 = time.perf_counter()
            for r, p in zip(raws, preps):
                predictor.postprocess(r, p.meta)
            t4 = time.perf_counter()
            if i >= cfg.warmup:
                timings.append((t4 - t0) * 1e3)
                for k, a, b in (("decode", t0, t1), ("preprocess", t1, t2), ("infer", t2, t3), ("postprocess", t3, t4)):
                    stages[k].append((b - a) * 1e3)
    else:
        raise UserError(f"--mode must be pure or e2e, got {cfg.mode!r}")
    lat = _stats(timings)
    row = {"backend": predictor.backend_name, "batch": cfg.batch, "mode": cfg.mode, "iters": cfg.iters,
           "latency_ms": lat, "throughput": cfg.batch * 1e3 / lat["mean"],
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if cfg.mode == "e2e":
        # means, so that the stages add up to the mean latency (medians of stages need not add up
        # to anything when images of several sizes are cycled through)
        row["stages_ms"] = {k: float(np.mean(v)) for k, v in stages.items()}
        row["stages_p50_ms"] = {k: float(np.median(v)) for k, v in stages.items()}
    return row


def _run_streams(cfg: BenchConfig, predictor, encoded: list[bytes]) -> dict:
    from ..runtime.io import decode_image
    from ..runtime.preprocess import stack
    from .streams import run_streams

    if cfg.mode == "pure":
        from ..runtime.synthetic import synthetic_image

        h, w = cfg.image_size or _default_hw(predictor)
        feed = stack([predictor.preprocess(synthetic_image(h, w, seed=0))] * cfg.batch)

        def work(i: int) -> None:
            predictor.infer(feed)
    elif cfg.mode == "e2e":
        def work(i: int) -> None:
            preps = [predictor.preprocess(decode_image(encoded[(i * cfg.batch + k) % len(encoded)])) for k in range(cfg.batch)]
            raw = predictor.infer(preps[0].inputs if len(preps) == 1 else stack(preps))
            for j, p in enumerate(preps):
                predictor.postprocess(raw if len(preps) == 1 else {k: v[j:j + 1] for k, v in raw.items()}, p.meta)
    else:
        raise UserError(f"--mode must be pure or e2e, got {cfg.mode!r}")
    latencies, wall = run_streams(work, cfg.streams, cfg.warmup, cfg.iters)
    return {"backend": predictor.backend_name, "batch": cfg.batch, "mode": cfg.mode, "streams": cfg.streams,
            "iters": cfg.iters, "latency_ms": _stats(latencies),
            "throughput": cfg.batch * len(latencies) / wall,  # samples/s with every stream busy
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def _child(cfg: BenchConfig, conn) -> None:
    try:
        conn.send(("ok", _run_one(cfg)))
    except UserError as e:
        conn.send(("user", str(e)))
    except Exception as e:  # report the bug in the parent with its message
        import traceback

        conn.send(("bug", "".join(traceback.format_exception(e))))
    finally:
        conn.close()


def run_bench(cfg: BenchConfig) -> dict:
    """One backend and batch size in a fresh process; returns its result row."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(cfg, child))
    proc.start()
    child.close()
    try:
        kind, payload = parent.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"the {cfg.backend} benchmark process died (exit code {proc.exitcode})") from None
    proc.join()
    if kind == "user":
        raise UserError(payload)
    if kind == "bug":
        raise RuntimeError(f"{cfg.backend} benchmark failed:\n{payload}")
    return payload
