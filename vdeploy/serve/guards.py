"""The server's front door, as one ASGI middleware, before any route or engine code runs:

- bearer-token auth on everything but health (and the static page, which holds no data);
- the model repository control API (load/unload by name) refused;
- a request body limit (413), the body read here so that a route never sees more;
- request counts, latency and error metrics per model and endpoint.
"""
from __future__ import annotations

import hmac
import json
import time
from typing import Awaitable, Callable

from .metrics import ServeMetrics

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


class Guard:
    def __init__(self, app, *, token: str | None, max_body_bytes: int, metrics: ServeMetrics, model_names):
        self.app = app
        self.token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.model_names = frozenset(model_names)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        model, endpoint = endpoint_of(scope["path"], self.model_names)
        status = [500]

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_counted)
        finally:
            self.metrics.observe(model, endpoint, status[0], time.perf_counter() - start)

    async def _handle(self, scope, receive, send):
        path = scope["path"]
        headers = dict(scope["headers"])
        if self.token and path not in OPEN_PATHS and not self._authorized(headers):
            await _drain(receive, DRAIN_CAP_BYTES)
            return await _reply(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])
        if path.startswith("/v2/repository"):
            await _drain(receive, DRAIN_CAP_BYTES)
            return await _reply(send, 403, "the model repository API is disabled; models are chosen when the server starts")
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            if not declared.isdigit():
                return await _reply(send, 400, "bad Content-Length")
            await _drain(receive, DRAIN_CAP_BYTES)
            return await _reply(send, 413, f"request body over the limit of {self.max_body_bytes} bytes", close=True)
        body, complete = await _read_body(receive, self.max_body_bytes)
        if not complete:
            return await _reply(send, 413, f"request body over the limit of {self.max_body_bytes} bytes", close=True)
        await self.app(scope, _replay(body, receive), send)

    def _authorized(self, headers: dict) -> bool:
        got = headers.get(b"authorization", b"")
        return got.startswith(b"Bearer ") and hmac.compare_digest(got[7:].strip(), self.token)


async def _read_body(receive, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            await _drain(receive, DRAIN_CAP_BYTES - size, more=message.get("more_body", False))
            return b"", False
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True


async def _drain(receive, cap: int, more: bool = True) -> None:
    while more and cap > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        cap -= len(message.get("body", b""))
        more = message.get("more_body", False)


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
