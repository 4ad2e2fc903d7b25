"""One model's inference pipeline: admission, decode, dynamic batching, one inference thread.

Predictors are not assumed thread-safe, so every backend call of a model goes through a single
thread. Decoding, preprocessing and postprocessing run in a shared thread pool, so they overlap
with the inference of the neighbouring batch:

    request -> admit (bounded) -> decode+preprocess (pool) -> queue -> batch -> infer (1 thread)
            -> postprocess (pool) -> response

Engine-free: the HTTP layer maps the exceptions below to status codes.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import UserError
from ..runtime.io import ImageTooLarge


_POLL_S = 0.001


class QueueFull(Exception):
    """More images are in flight than the model's queue admits (HTTP 503 with Retry-After)."""


class RequestTimeout(Exception):
    """The request did not finish within the per-request timeout (HTTP 504)."""


class BadImage(UserError):
    """An input that is not a decodable image (HTTP 400)."""


class TooLarge(UserError):
    """More than the server can ever take: an image over the pixel limit, or more images in one
    request than the model's queue holds (HTTP 413: retrying cannot help)."""


@dataclass
class BatchPolicy:
    max_batch_size: int = 1
    max_delay_s: float = 0.005
    max_queue: int = 64          # images admitted and not yet answered
    timeout_s: float = 100.0     # per request, admission to answer (decoding included)


@dataclass
class _Item:
    prepared: Any
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class InferenceWorker:
    """Serves one predictor. `await worker.predict([encoded images])` -> list of Predictions."""

    def __init__(self, predictor, policy: BatchPolicy, pool: concurrent.futures.Executor, *,
                 decode: Callable[[bytes, str], np.ndarray], on_batch: Callable[[int], None] | None = None):
        self.predictor = predictor
        batchable = bool(predictor.spec.get("batchable"))
        self.max_batch_size = max(1, policy.max_batch_size) if batchable else 1
        self.policy = policy
        self.pool = pool
        self.decode = decode
        self.on_batch = on_batch or (lambda n: None)
        self.in_flight = 0
        self._queue: asyncio.Queue[_Item] | None = None
        self._infer_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vdeploy-infer")
        self._loop_task: asyncio.Task | None = None
        self._post_tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._loop_task = asyncio.get_running_loop().create_task(self._batch_loop())

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        self._infer_thread.shutdown(wait=False, cancel_futures=True)

    async def predict(self, images: list[bytes]) -> list:
        """Admit all images of one request or none of them; answer in input order."""
        n = len(images)
        if n == 0:
            raise BadImage("the request has no image")
        if n > self.policy.max_queue:
            raise TooLarge(f"{n} images in one request; this model's queue holds at most {self.policy.max_queue} "
                           "(send fewer per request, or start the server with a larger --max-queue)")
        if self.in_flight + n > self.policy.max_queue:
            raise QueueFull(f"{self.in_flight} images in flight, the queue admits {self.policy.max_queue}")
        self.in_flight += n
        deadline = time.monotonic() + self.policy.timeout_s
        tasks = [asyncio.ensure_future(self._one(i, data, deadline)) for i, data in enumerate(images)]
        gathered = asyncio.gather(*tasks)
        # A request cancelled from outside (the server's shutdown deadline) leaves the gather with a
        # CancelledError nobody reads, which asyncio would log with a traceback: read it here.
        gathered.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            try:
                return await asyncio.wait_for(gathered, self.policy.timeout_s)
            except asyncio.TimeoutError:
                raise RequestTimeout(f"no answer within {self.policy.timeout_s:g} s") from None
        finally:
            # One bad image fails the request: its other images stop where they are (a cancelled
            # task cancels its queued item, which the batch loop then skips).
            for t in tasks:
                t.cancel()
            self.in_flight -= n

    async def _one(self, index: int, data: bytes, deadline: float):
        loop = asyncio.get_running_loop()
        # A decode not started by the deadline never starts (the timeout cancels its pool future);
        # one under way is bounded by the pixel limit checked from the header, and what follows it
        # is skipped past the deadline.
        prepared = await loop.run_in_executor(self.pool, self._decode_and_prepare, index, data, deadline)
        item = _Item(prepared, loop.create_future())
        await self._queue.put(item)
        return await item.future

    def _decode_and_prepare(self, index: int, data: bytes, deadline: float):
        if time.monotonic() > deadline:
            raise RequestTimeout(f"no answer within {self.policy.timeout_s:g} s")
        try:
            image = self.decode(data, f"image {index}")
        except ImageTooLarge as e:
            raise TooLarge(str(e)) from None
        except UserError as e:
            raise BadImage(str(e)) from None
        if time.monotonic() > deadline:
            raise RequestTimeout(f"no answer within {self.policy.timeout_s:g} s")
        return self.predictor.preprocess(image)

    async def _next_batch(self) -> list[_Item]:
        items = [await self._queue.get()]
        deadline = time.perf_counter() + self.policy.max_delay_s
        # Polled rather than `wait_for(queue.get(), ...)`: a get cancelled by its timeout just as it
        # completes drops the item on Python < 3.12, and that would be a lost request.
        while len(items) < self.max_batch_size:
            try:
                items.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                await asyncio.sleep(min(left, _POLL_S))
        # A timed-out request cancelled its futures: do not spend inference on it.
        return [it for it in items if not it.future.done()]

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._next_batch()
            for group in _same_shape_groups(items):
                self.on_batch(len(group))
                try:
                    raws = await loop.run_in_executor(self._infer_thread, self._infer, group)
                except Exception as e:  # a backend failure fails this batch, not the server
                    for it in group:
                        if not it.future.done():
                            it.future.set_exception(e)
                    continue
                for it, raw in zip(group, raws):
                    task = loop.create_task(self._postprocess(it, raw))
                    self._post_tasks.add(task)
                    task.add_done_callback(self._post_tasks.discard)

    def _infer(self, group: list[_Item]) -> list[dict]:
        if len(group) == 1:
            return [self.predictor.infer(group[0].prepared.inputs)]
        from ..runtime.preprocess import stack

        raw = self.predictor.infer(stack([it.prepared for it in group]))
        return [{k: v[i:i + 1] for k, v in raw.items()} for i in range(len(group))]

    async def _postprocess(self, item: _Item, raw: dict) -> None:
        loop = asyncio.get_running_loop()
        try:
            pred = await loop.run_in_executor(self.pool, self.predictor.postprocess, raw, item.prepared.meta)
        except Exception as e:
            if not item.future.done():
                item.future.set_exception(e)
            return
        if not item.future.done():
            item.future.set_result(pred)


def _same_shape_groups(items: list[_Item]) -> list[list[_Item]]:
    """Only images whose input tensors share shapes can be stacked into one batch."""
    groups: dict[tuple, list[_Item]] = {}
    for it in items:
        key = tuple((k, v.shape) for k, v in sorted(it.prepared.inputs.items()))
        groups.setdefault(key, []).append(it)
    return list(groups.values())
