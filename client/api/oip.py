"""Open Inference Protocol v2 (KServe v2 / Triton HTTP) routes, beside /recognize.

    GET  /v2                                       server metadata
    GET  /v2/health/live, /v2/health/ready         200 when true, 400 when false
    GET  /v2/models/{name}[/versions/{version}]    model metadata
    GET  /v2/models/{name}[/versions/{version}]/ready
    POST /v2/models/{name}[/versions/{version}]/infer

The model, its inputs and outputs: client/oip_model.py. Errors answer in the protocol's shape,
`{"error": "message"}`, with the status of the SIQError behind them (400 for a malformed
request, 404 for an unknown model or version, 413/415/422 for images, as /recognize, 503 while
no bundle is loaded).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from client.api.deps import LoadedDep, ManagerDep, pipeline_of
from client.oip_model import check_model, model_metadata
from shared.errors import SIQError, error_headers

__all__ = ["router"]

SERVER_NAME, SERVER_VERSION = "siq-client", "0.1.0"
EXTENSIONS = ["binary_tensor_data"]


class _ProtocolRoute(APIRoute):
    """Answers every SIQError of its route as the protocol's `{"error": "..."}`, with the
    error's headers (503 overloaded: Retry-After)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SIQError as exc:
                return JSONResponse(
                    {"error": str(exc)}, status_code=exc.http_status, headers=error_headers(exc)
                )

        return route


# Not in the client's OpenAPI: the protocol has its own specification (KServe's v2 data plane),
# and its clients (tritonclient, KServe, MLServer) are built from that, not from ours.
router = APIRouter(
    prefix="/v2",
    tags=["open inference protocol v2"],
    route_class=_ProtocolRoute,
    include_in_schema=False,
)


def _not(what: str) -> Response:
    return JSONResponse({"error": what}, status_code=400)


@router.get("")
async def server_metadata() -> dict:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}


@router.get("/health/live")
async def live() -> Response:
    return Response(status_code=200)


@router.get("/health/ready")
async def ready(manager: ManagerDep) -> Response:
    if manager.current is None:
        return _not(f"not ready: no bundle is loaded yet ({manager.source.describe()})")
    return Response(status_code=200)


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def metadata(name: str, loaded: LoadedDep, version: str | None = None) -> dict:
    check_model(loaded, name, version)
    return model_metadata(loaded)


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(name: str, manager: ManagerDep, version: str | None = None) -> Response:
    loaded = manager.current
    if loaded is None:
        return _not(f"model {name!r} is not ready: no bundle is loaded yet")
    check_model(loaded, name, version)
    return Response(status_code=200)


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(name: str, request: Request, version: str | None = None) -> Response:
    content, headers = await pipeline_of(request).infer(request, name, version)
    return Response(content, headers=headers)
