"""POST /recognize: one image (`file`), several (`files`), or a raw image/* body."""

from __future__ import annotations

import functools
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from client.api.deps import serving_of
from client.openapi import RECOGNIZE
from client.recognize import answer, open_uploads, prepared, read_uploads

__all__ = ["router"]

router = APIRouter(tags=["recognition"])


@router.post("/recognize", **RECOGNIZE)
async def recognize_route(request: Request) -> JSONResponse:
    start = time.perf_counter()
    serving = serving_of(request)  # 503 before the first bundle
    settings, loaded = serving.settings, serving.loaded
    serving.admission.admit()  # 503 + Retry-After at once when the line is full
    try:
        uploads = await read_uploads(
            request,
            max_bytes=settings.max_upload_bytes,
            max_images=settings.max_images,
            timeout_s=settings.body_timeout_s,
        )
        names = [name for name, _ in uploads]
        # an inference process reads the headers and enforces the pixel budgets itself; it
        # hands back (None) a request too large for it
        done = None
        if serving.processes is not None:
            done = await serving.processes.recognize(loaded.bundle, uploads)
        if done is not None:
            labels, probs, timings = done
        else:
            opened = open_uploads(
                uploads,
                max_pixels=settings.max_pixels,
                max_request_pixels=settings.max_request_pixels,
            )
            work = functools.partial(prepared, loaded, opened)  # decode and preprocess
            batch, timings = await serving.dispatcher.run(
                work, key=loaded.bundle.id, images=len(uploads), pixels=opened.pixels
            )
            t = time.perf_counter()
            # the network in a worker thread, in one call with other requests' images
            labels, probs = await serving.batcher.predict(loaded.network, batch)
            timings["inference"] = round((time.perf_counter() - t) * 1e3, 3)
    finally:
        serving.admission.release()
    body = answer(loaded, names, labels, probs, timings)
    serving.metrics.images.inc(len(uploads))
    timings["total"] = round((time.perf_counter() - start) * 1e3, 3)
    return JSONResponse(body)
