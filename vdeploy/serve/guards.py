"""The server's front door, as one ASGI middleware, before any route or engine code runs:

- bearer-token auth on everything but health (and the static page, which holds no data);
- the model repository control API (load/unload by name) refused;
- a request head limit (431) and a request body limit (413) and a body-read deadline (408), the body read here so that a route
  never sees more, nor waits on a client that stopped sending; on shutdown a body still being
  received is answered 503 at once, so held uploads cannot hold the server up;
- request counts, latency and error metrics per model and endpoint, and one log line (no
  traceback) per client error.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Awaitable, Callable

from .metrics import ServeMetrics

log = logging.getLogger("uvicorn.error")

OPEN_PATHS = frozenset({"/", "/ping", "/v2/health/live", "/v2/health/ready"})
# An over-limit body is still read (and dropped) so the client sees the 413 rather than a reset
# connection; past this much the connection is cut instead.
DRAIN_CAP_BYTES = 512 << 20


def endpoint_of(path: str, model_names) -> tuple[str, str]:
    """(model, endpoint) labels; unknown model names collapse into one label."""
    parts = path.strip("/").split("/")
    model, endpoint = "", "other"
    if len(parts) >= 2 and parts[0] == "predictions":
        model, endpoint = parts[1], "predictions"
    elif len(parts) >= 3 and parts[:2] == ["v2", "models"]:
        model = parts[2]
        endpoint = "v2_infer" if parts[-1] == "infer" else "v2_model"
    elif parts[:2] == ["v2", "health"] or parts == ["ping"]:
        endpoint = "health"
    if model and model not in model_names:
        model = "_unknown"
    return model, endpoint


class _Cut(Exception):
    """Stop reading this request: answer `status` and close the connection."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Guard:
    def __init__(self, app, *, token: str | None, max_body_bytes: int, metrics: ServeMetrics, model_names,
                 body_timeout_s: float = 60.0, closing: asyncio.Event | None = None, max_header_bytes: int = 16 << 10):
        self.app = app
        self.token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.model_names = frozenset(model_names)
        self.body_timeout_s = body_timeout_s
        self.closing = closing  # set when the server shuts down
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        model, endpoint = endpoint_of(scope["path"], self.model_names)
        status, error = [500], [""]

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and 400 <= status[0] < 500 and not error[0]:
                error[0] = _error_text(message.get("body", b""))
            await send(message)

        try:
            await self._handle(scope, receive, send_counted)
        except asyncio.CancelledError:
            if self.closing is None or not self.closing.is_set():
                raise
            # The shutdown deadline passed with this request in progress: answer it (uvicorn
            # would log a traceback for a cancelled request, which is no error of anyone's).
            if status[0] == 500:
                try:
                    await _reply(send_counted, 503, "the server shut down before this request was answered", close=True)
                except Exception:  # the connection is already gone
                    pass
        finally:
            self.metrics.observe(model, endpoint, status[0], time.perf_counter() - start)
            if 400 <= status[0] < 500:
                client = scope.get("client")
                log.info('%s "%s %s" %d %s', f"{client[0]}:{client[1]}" if client else "-", scope["method"],
                         scope["path"], status[0], error[0])

    async def _handle(self, scope, receive, send):
        path = scope["path"]
        headers = dict(scope["headers"])
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        # A client waiting for "100 Continue" has not sent its body: refuse without asking for it.
        expects_continue = headers.get(b"expect", b"").lower() == b"100-continue"
        # h11 bounds a head still arriving; one arriving whole in a single read is checked here
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + sum(
            len(k) + len(v) + 4 for k, v in scope["headers"])
        if head > self.max_header_bytes:
            return await _reply(send, 431, f"request head of {head} bytes, over the limit of {self.max_header_bytes}",
                                close=True)
        try:
            if self.token and path not in OPEN_PATHS and not self._authorized(headers):
                if not expects_continue:
                    await self._drain(receive, DRAIN_CAP_BYTES, deadline)
                return await _reply(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])
            if path.startswith("/v2/repository"):
                if not expects_continue:
                    await self._drain(receive, DRAIN_CAP_BYTES, deadline)
                return await _reply(send, 403, "the model repository API is disabled; models are chosen when the server starts")
            if scope["method"] not in ("POST", "PUT", "PATCH"):
                return await self.app(scope, receive, send)
            declared = headers.get(b"content-length")
            too_large = f"request body over the limit of {self.max_body_bytes} bytes"
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
                if not declared.isdigit():
                    return await _reply(send, 400, "bad Content-Length", close=True)
                if not expects_continue:
                    await self._drain(receive, DRAIN_CAP_BYTES, deadline)
                return await _reply(send, 413, too_large, close=True)
            body = await self._read_body(receive, deadline)
        except _Cut as cut:
            return await _reply(send, cut.status, str(cut), close=True)
        if body is None:  # the client went away mid-body: nobody to answer
            return
        await self.app(scope, _replay(body, receive), send)

    def _authorized(self, headers: dict) -> bool:
        got = headers.get(b"authorization", b"")
        return got.startswith(b"Bearer ") and hmac.compare_digest(got[7:].strip(), self.token)

    async def _receive(self, receive, deadline: float) -> dict:
        """receive(), bounded by the body deadline and cut short by shutdown (_Cut)."""
        loop = asyncio.get_running_loop()
        if self.closing is not None and self.closing.is_set():
            raise _Cut(503, "the server is shutting down")
        get = asyncio.ensure_future(receive())
        waiters = {get}
        if self.closing is not None:
            waiters.add(asyncio.ensure_future(self.closing.wait()))
        try:
            done, _ = await asyncio.wait(waiters, timeout=max(0.0, deadline - loop.time()),
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in waiters:
                if not t.done():
                    t.cancel()
        if get in done:
            return get.result()
        if done:
            raise _Cut(503, "the server is shutting down")
        raise _Cut(408, f"request body not received within {self.body_timeout_s:g} s")

    async def _read_body(self, receive, deadline: float) -> bytes | None:
        """The whole body; None when the client disconnected; _Cut past the size limit or deadline."""
        chunks, size = [], 0
        while True:
            message = await self._receive(receive, deadline)
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                if message.get("more_body", False):
                    await self._drain(receive, DRAIN_CAP_BYTES - size, deadline)
                raise _Cut(413, f"request body over the limit of {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _drain(self, receive, cap: int, deadline: float) -> None:
        """Read and drop up to `cap` bytes of body, so the answer reaches a client still sending."""
        more = True
        while more and cap > 0:
            try:
                message = await self._receive(receive, deadline)
            except _Cut:
                return  # the answer goes out anyway, and the connection is closed after it
            if message["type"] != "http.request":
                return
            cap -= len(message.get("body", b""))
            more = message.get("more_body", False)


def _error_text(body: bytes) -> str:
    """The message of an error body, on one line, for the log."""
    try:
        text = str(json.loads(body).get("error", ""))
    except (ValueError, AttributeError):
        text = body[:200].decode("utf-8", "replace")
    return " ".join(text.split())[:300]


def _replay(body: bytes, receive) -> Callable[[], Awaitable[dict]]:
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect as the server reports it

    return replay


async def _reply(send, status: int, message: str, extra_headers=(), close: bool = False) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra_headers]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
