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

import functools
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from client.api.deps import LoadedDep, ManagerDep, serving_of
from client.dispatch import INLINE_BODY_BYTES
from client.oip_codec import HEADER_LENGTH
from client.oip_model import Limits, check_model, finish, infer_bytes, model_metadata, prepare
from client.recognize import read_body
from shared.errors import SIQError

__all__ = ["router"]

SERVER_NAME, SERVER_VERSION = "siq-client", "0.1.0"
EXTENSIONS = ["binary_tensor_data"]


class _ProtocolRoute(APIRoute):
    """Answers every SIQError of its route as the protocol's `{"error": "..."}`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SIQError as exc:
                return JSONResponse({"error": str(exc)}, status_code=exc.http_status)

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
    serving = serving_of(request)  # 503 before the first bundle
    settings, loaded = serving.settings, serving.loaded
    check_model(loaded, name, version)
    serving.admission.admit()  # the line /recognize waits in: 503 + Retry-After when full
    try:
        body = await read_body(request, settings.max_upload_bytes, settings.body_timeout_s)
        limits = Limits(
            settings.max_images,
            settings.max_pixels,
            settings.max_request_pixels,
            settings.max_upload_bytes,
        )
        header_length = request.headers.get(HEADER_LENGTH)
        encoding = request.headers.get("content-encoding")
        done: tuple[bytes, dict[str, str], int] | None = None
        if serving.processes is not None:  # all of it in an inference process (its own GIL)
            work = functools.partial(  # work(loaded): parse, decode, the network, encode
                infer_bytes,
                body=body,
                header_length=header_length,
                content_encoding=encoding,
                limits=limits,
                max_pixels=serving.processes.child_pixels,  # larger: handed back (None)
            )
            done = await serving.processes.run(loaded.bundle, work)
        if done is None:  # as /recognize: once read, what it costs says inline or a thread
            read = functools.partial(
                prepare,
                loaded,
                body,
                header_length=header_length,
                content_encoding=encoding,
                limits=limits,
            )
            small = encoding is None and len(body) <= INLINE_BODY_BYTES
            prepared = read() if small else await serving.dispatcher.in_thread(read)
            done = await serving.dispatcher.run(
                functools.partial(finish, loaded, prepared),
                key=f"oip:{loaded.bundle.id}",
                images=prepared.images,
                pixels=prepared.pixels,
            )
        content, headers, images = done
    finally:
        serving.admission.release()
    serving.metrics.images.inc(images)
    return Response(content, headers=headers)
