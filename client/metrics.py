"""Prometheus metrics of one client app, in a registry of its own (several apps can live in one
test process without clashing), plus a pure ASGI middleware that counts and times requests."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["ClientMetrics", "MetricsMiddleware", "CONTENT_TYPE_LATEST"]

# path templates, so /v2/models/mnist/infer counts as /v2/models/{name}/infer
_ENDPOINTS = {
    "/recognize",
    "/bundle",
    "/healthz",
    "/readyz",
    "/metrics",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/{name}",
    "/v2/models/{name}/versions/{version}",
    "/v2/models/{name}/ready",
    "/v2/models/{name}/versions/{version}/ready",
    "/v2/models/{name}/infer",
    "/v2/models/{name}/versions/{version}/infer",
}


class ClientMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "siq_client_requests_total",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "siq_client_request_seconds",
            "HTTP request latency by endpoint",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.images = Counter(
            "siq_client_images_total", "images recognised", registry=self.registry
        )
        self.batch_images = Histogram(
            "siq_client_batch_images",
            "images per network call (concurrent requests batched together)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.swaps = Counter(
            "siq_client_bundle_swaps_total",
            "bundles put into service (first load included)",
            registry=self.registry,
        )
        self.fetch_failures = Counter(
            "siq_client_bundle_fetch_failures_total",
            "failed bundle fetches, by reason (unreachable, refused)",
            ["reason"],
            registry=self.registry,
        )
        self.loaded = Gauge(
            "siq_client_bundle_loaded", "1 when a bundle is serving", registry=self.registry
        )
        self.inference_processes = Gauge(  # its function is the pool's, when there is one
            "siq_client_inference_processes",
            "inference processes running (SIQ_INFERENCE_PROCESSES; started with each bundle)",
            registry=self.registry,
        )
        self.inference_process_losses = Counter(
            "siq_client_inference_process_losses_total",
            "inference processes lost, by reason (exited, unanswered: killed after its batch's "
            "deadline, load_failed); each is started again",
            ["reason"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request by endpoint and status and observes its latency."""

    def __init__(self, app, metrics: ClientMetrics):
        self.app = app
        self.metrics = metrics
        # the labelled children, looked up once: `labels()` takes a lock and builds a key on
        # every call, and this runs on every request
        self._latency: dict[str, Any] = {}
        self._requests: dict[tuple[str, int], Any] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}
        start = time.perf_counter()

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # the router leaves the matched route in the scope: its path is the template
            path = getattr(scope.get("route"), "path", None) or scope.get("path", "")
            endpoint = path if path in _ENDPOINTS else "other"
            latency = self._latency.get(endpoint)
            if latency is None:
                latency = self._latency[endpoint] = self.metrics.latency.labels(endpoint)
            latency.observe(time.perf_counter() - start)
            key = (endpoint, status["code"])
            count = self._requests.get(key)
            if count is None:
                count = self._requests[key] = self.metrics.requests.labels(endpoint, str(key[1]))
            count.inc()
