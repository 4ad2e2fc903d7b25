"""Prometheus metrics of the vdeploy server, in a registry of their own.

A registry per app keeps several apps in one process (the tests) from colliding; `/metrics`
exposes it together with the engine's global registry (KServe's per-stage histograms).
"""
from __future__ import annotations

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ServeMetrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("vdeploy_requests", "HTTP requests answered", ["model", "endpoint", "code"], registry=r)
        self.latency = Histogram("vdeploy_request_latency_seconds", "Time from request to answer",
                                 ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("vdeploy_errors", "Requests answered with an error", ["model", "kind"], registry=r)
        self.batch_size = Histogram("vdeploy_batch_size", "Images per backend call", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.in_flight = Gauge("vdeploy_images_in_flight", "Images admitted and not yet answered", ["model"], registry=r)

    def observe(self, model: str, endpoint: str, code: int, seconds: float) -> None:
        self.requests.labels(model, endpoint, str(code)).inc()
        self.latency.labels(model, endpoint).observe(seconds)
        if code >= 400:
            self.errors.labels(model, _error_kind(code)).inc()


def _error_kind(code: int) -> str:
    return {400: "bad_input", 401: "unauthorized", 403: "forbidden", 404: "not_found", 413: "too_large",
            503: "overloaded", 504: "timeout"}.get(code, "client" if code < 500 else "server")
