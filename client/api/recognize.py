"""POST /recognize: one image (`file`), several (`files`), or a raw image/* body."""

from __future__ import annotations

import functools
import time

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from client.api.deps import LimiterDep, LoadedDep, MetricsDep, SettingsDep
from client.recognize import read_uploads, recognize

__all__ = ["router"]

router = APIRouter(tags=["recognition"])


@router.post("/recognize")
async def recognize_route(
    request: Request,
    loaded: LoadedDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    limiter: LimiterDep,
) -> JSONResponse:
    start = time.perf_counter()
    uploads = await read_uploads(
        request, max_bytes=settings.max_upload_bytes, max_images=settings.max_images
    )
    work = functools.partial(
        recognize,
        loaded,
        uploads,
        max_pixels=settings.max_pixels,
        max_request_pixels=settings.max_request_pixels,
    )
    answer = await anyio.to_thread.run_sync(work, limiter=limiter)
    metrics.images.inc(len(uploads))
    answer["timings_ms"]["total"] = round((time.perf_counter() - start) * 1e3, 3)
    return JSONResponse(answer)
