"""Run every backend over a dataset and score it: a bounded prefetch pipeline so the backend is
never waiting on decoding, and resumable output so a killed run picks up where it stopped.

Pipeline per backend (all threads, bounded so memory stays flat):
    reader threads: read + decode + preprocess   (up to `depth` images ahead)
    caller thread:  backend.infer                (one image at a time)
    writer thread:  postprocess + record + store (up to `depth` images behind)
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..errors import UserError
from ..runtime.io import atomic_write_json, read_image
from .datasets import Sample, Scores
from .records import match_keys, read_predictions, to_record
from .store import JsonlStore, MemoryStore

RUN_FILE = "run.json"


@dataclass
class BackendResult:
    name: str
    scores: Scores
    images: int                      # images scored
    new_images: int = 0              # images predicted in this run (the rest were resumed)
    seconds: float = 0.0             # wall time of the new predictions
    extra: dict = field(default_factory=dict)

    @property
    def images_per_second(self) -> Optional[float]:
        return self.new_images / self.seconds if self.new_images and self.seconds > 0 else None


def run_identity(dataset, model_id: str) -> dict:
    """What must not change between a run and its resumption."""
    keys = hashlib.sha256("\n".join(s.key for s in dataset.samples).encode()).hexdigest()
    return {"model": model_id, "format": dataset.format, "dataset": str(getattr(dataset, "root", "")),
            "samples_sha256": keys}


def check_resumable(out: Path, identity: dict) -> None:
    path = out / RUN_FILE
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = None
        if old != identity:
            raise UserError(f"{out}: holds an evaluation of another model or dataset ({path}); "
                            "give another --out folder or delete this one")
    else:
        atomic_write_json(path, identity)


def predict_all(predictor, samples: Sequence[Sample], store, classes: list[str],
                advance: Callable[[int], None] = lambda n: None, readers: int = 2, depth: int = 8) -> int:
    """Predict every sample not in `store` yet and add its record; returns how many."""
    done = store.done()
    todo = [s for s in samples if s.key not in done]
    if not todo:
        return 0

    def load(s: Sample):
        return predictor.preprocess(read_image(s.path))

    def finish(s: Sample, raw, meta) -> None:
        pred = predictor.postprocess(raw, meta)
        store.add(to_record(pred, s.key, classes, store.side_dir))
        advance(1)

    with ThreadPoolExecutor(readers, thread_name_prefix="eval-read") as read_pool, \
            ThreadPoolExecutor(1, thread_name_prefix="eval-write") as write_pool:
        queued = iter(todo)
        ahead: deque = deque()
        behind: deque = deque()
        try:
            for s in queued:
                ahead.append((s, read_pool.submit(load, s)))
                if len(ahead) >= depth:
                    break
            while ahead:
                s, fut = ahead.popleft()
                prep = fut.result()
                nxt = next(queued, None)
                if nxt is not None:
                    ahead.append((nxt, read_pool.submit(load, nxt)))
                raw = predictor.infer(prep.inputs)
                behind.append(write_pool.submit(finish, s, raw, prep.meta))
                while behind and (len(behind) > depth or behind[0].done()):
                    behind.popleft().result()  # re-raises a writer error here
            while behind:
                behind.popleft().result()
        except BaseException:
            for _, f in ahead:
                f.cancel()
            for f in behind:
                f.cancel()
            raise
    return len(todo)


class _Progress:
    """A rich progress bar (images/s, ETA) on stderr, or nothing."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=Console(stderr=True))
            self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def task(self, name: str, total: int, done: int) -> Callable[[int], None]:
        if self._bar is None:
            return lambda n: None
        tid = self._bar.add_task(name, total=total, completed=done, rate="")
        start, count = time.perf_counter(), [0]

        def advance(n: int) -> None:
            count[0] += n
            rate = count[0] / max(time.perf_counter() - start, 1e-9)
            self._bar.update(tid, advance=n, rate=f"{rate:6.1f} img/s")
        return advance


def evaluate(dataset, backends: Sequence[str], make_predictor: Callable[[str], object], *,
             model_id: str, classes: Sequence[str], out: Optional[Path] = None, limit: Optional[int] = None,
             predictions: Sequence[Path] = (), progress: bool = True, readers: int = 2) -> list[BackendResult]:
    """Score each backend, then each predictions file, on `dataset`. `classes` are the model's
    (what a predictions file's class ids refer to)."""
    samples = dataset.samples[:limit] if limit else dataset.samples
    keys = [s.key for s in samples]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        check_resumable(out, run_identity(dataset, model_id))
    results = []
    with _Progress(progress) as bar, tempfile.TemporaryDirectory(prefix="vdeploy-eval-") as scratch:
        for name in backends:
            store = JsonlStore(out / "predictions" / _safe(name)) if out else MemoryStore(Path(scratch) / _safe(name))
            try:
                predictor = make_predictor(name)
                if hasattr(predictor, "load"):
                    predictor.load()  # build the session before the clock starts
                advance = bar.task(name, len(samples), len(store.done() & set(keys)))
                t0 = time.perf_counter()
                if hasattr(predictor, "predict_all"):  # runs the samples elsewhere itself (vdeploy.scale.ray_batch)
                    n_new = predictor.predict_all(samples, store, list(classes), advance)
                else:
                    n_new = predict_all(predictor, samples, store, list(classes), advance, readers=readers)
                seconds = time.perf_counter() - t0
            finally:
                store.close()
            scores = dataset.score(store.records(keys), list(classes))
            results.append(BackendResult(name, scores, len(keys), n_new, seconds))
        for path in predictions:
            recs = match_keys(read_predictions(path), keys, path)
            missing = len(keys) - len(recs)
            scores = dataset.score({k: recs[k] for k in keys if k in recs}, list(classes))
            if missing:
                scores.notes.append(f"{missing} of {len(keys)} images have no prediction in {path.name} and are not scored")
            results.append(BackendResult(path.stem, scores, len(recs)))
    return results


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
