"""Health, readiness and Prometheus metrics (the data sets: api/datasets.py)."""

from __future__ import annotations

import tempfile

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from server.service.api.deps import ContextDep
from server.service.metrics import CONTENT_TYPE_LATEST
from shared.api import HealthStatus

__all__ = ["router"]

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=HealthStatus, summary="The process is alive")
def healthz() -> HealthStatus:
    return HealthStatus(status="ok")


@router.get(
    "/readyz",
    response_model=HealthStatus,
    responses={503: {"model": HealthStatus, "description": "not ready; `checks` says why"}},
    summary="Database, state directory and job runner usable",
)
def readyz(ctx: ContextDep) -> Response:
    checks: dict[str, str] = {}
    try:
        ctx.jobs.ping()
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report, don't raise
        checks["database"] = f"error: {exc}"
    try:
        with tempfile.NamedTemporaryFile(dir=ctx.settings.bundle_dir, prefix=".probe-") as probe:
            probe.write(bytes(4096))  # a block of data: an empty file fits on a full disk
            probe.flush()
        checks["state_dir"] = "ok"
    except OSError as exc:
        checks["state_dir"] = f"error: {exc.strerror or exc}"
    checks["job_runner"] = "ok" if ctx.runner.alive() else "error: not running"
    ready = all(v == "ok" for v in checks.values())
    body = HealthStatus(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
def metrics(ctx: ContextDep) -> Response:
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
