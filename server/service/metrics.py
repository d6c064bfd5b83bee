"""Prometheus metrics of the training server, in a registry of its own per app (so several
apps in one test process do not collide).

    siq_jobs{status}                          jobs in the database by status (read at scrape)
    siq_job_duration_seconds{status}          run time of jobs that ended, by outcome
    siq_http_requests_total{method,route,status}
    siq_http_request_duration_seconds{method,route}
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from server.service.jobs import JobStore

__all__ = ["ServerMetrics", "CONTENT_TYPE_LATEST"]

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


class _JobsCollector(Collector):
    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("siq_jobs", "Quantize jobs by status", labels=["status"])
        try:
            counts = self.store.counts_by_status()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB is busy
            counts = {}
        for status in STATUSES:
            family.add_metric([status], counts.get(status, 0))
        yield family


class ServerMetrics:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.registry = CollectorRegistry()
        self.registry.register(_JobsCollector(store))
        self.job_duration = Histogram(
            "siq_job_duration_seconds",
            "Run time of quantize jobs that ended",
            ["status"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, float("inf")),
            registry=self.registry,
        )
        self.http_requests = Counter(
            "siq_http_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "siq_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )

    def job_ended(self, job_id: str) -> None:
        """Observe a finished job's duration (called by the runner)."""
        try:
            job = self.store.get(job_id)
        except Exception:  # noqa: BLE001
            return
        seconds = job.seconds()
        if seconds is not None:
            self.job_duration.labels(job.status).observe(seconds)

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.http_requests.labels(request.method, template, str(status)).inc()
            self.http_latency.labels(request.method, template).observe(time.perf_counter() - start)

    def render(self) -> bytes:
        return generate_latest(self.registry)
