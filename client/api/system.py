"""What is serving (GET /bundle), liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from client.api.deps import LoadedDep, ManagerDep, MetricsDep
from client.metrics import CONTENT_TYPE_LATEST
from client.openapi import NOT_READY

__all__ = ["router"]

router = APIRouter(tags=["system"])


@router.get("/bundle", **NOT_READY)
def bundle_route(loaded: LoadedDep) -> JSONResponse:
    """Id, data set, bits, class names, loaded_at and source of the bundle being served."""
    return JSONResponse(loaded.describe())


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", **NOT_READY)
def readyz(manager: ManagerDep) -> JSONResponse:
    """200 only while a bundle is loaded."""
    loaded = manager.current
    if loaded is None:
        checks = {"bundle": f"none ({manager.source.describe()})"}
        return JSONResponse({"status": "not ready", "checks": checks}, status_code=503)
    return JSONResponse({"status": "ready", "checks": {"bundle": loaded.bundle.id}})


@router.get("/metrics", response_class=PlainTextResponse)
def metrics_route(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
