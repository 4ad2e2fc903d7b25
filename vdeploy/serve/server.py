"""The HTTP server under the app: uvicorn (the server KServe's model server runs on), with the
connection limits uvicorn has and the two it lacks.

uvicorn gives: an idle timeout between requests (`timeout_keep_alive`), a cap on connections and
requests in progress (`limit_concurrency`: 503 past it), a request-head size limit (h11's
`max_incomplete_event_size`: 400 past it) and a shutdown deadline (`timeout_graceful_shutdown`).
It does not time out a connection that never completes its request head (a fresh connection
that sends nothing, or headers dripped a byte at a time): `_HeadTimeoutProtocol` closes those.
The body-read deadline lives in the Guard (guards.py), which reads every body. On SIGTERM,
`_Server` first tells the Guard to stop waiting for bodies (held uploads get 503 and are closed),
then uvicorn drains the requests in progress until the deadline and cancels the rest.

The h11 protocol is used rather than httptools because only h11 bounds the request head.
"""
from __future__ import annotations

import logging

log = logging.getLogger("uvicorn.error")


def make_server(app, config):
    """A uvicorn.Server for `app` (from build_app) with `config`'s (ServeConfig) limits."""
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class _HeadTimeoutProtocol(H11Protocol):
        """Closes a connection whose next request head is not complete within head_timeout_s of the
        connection opening or of the previous answer."""

        head_timeout_s = config.header_timeout_s

        def connection_made(self, transport):
            super().connection_made(transport)
            self._head_timer = None
            self._arm_head_timer()

        def on_response_complete(self):
            super().on_response_complete()
            self._arm_head_timer()

        def connection_lost(self, exc):
            self._cancel_head_timer()
            super().connection_lost(exc)

        def _cancel_head_timer(self):
            if getattr(self, "_head_timer", None) is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _arm_head_timer(self):
            self._cancel_head_timer()
            if not self.transport.is_closing():
                # A new request head replaces self.cycle; an unchanged, answered cycle means none came.
                self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timeout, self.cycle)

        def _head_timeout(self, cycle_when_armed):
            self._head_timer = None
            idle = cycle_when_armed is None or cycle_when_armed.response_complete
            if self.cycle is cycle_when_armed and idle and not self.transport.is_closing():
                client = "%s:%d" % self.client if self.client else "a client"
                log.info("%s: closed, no complete request head within %gs", client, self.head_timeout_s)
                self.transport.close()

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            app.state.closing.set()  # held uploads: stop waiting for their bodies
            await super().shutdown(sockets)

    uv_config = uvicorn.Config(
        app, host=config.host, port=config.port, http=_HeadTimeoutProtocol, log_level=config.log_level,
        access_log=False, timeout_keep_alive=config.keep_alive_s, limit_concurrency=config.max_connections,
        timeout_graceful_shutdown=config.shutdown_timeout_s, h11_max_incomplete_event_size=config.max_header_bytes,
        lifespan="on")
    return _Server(uv_config)
