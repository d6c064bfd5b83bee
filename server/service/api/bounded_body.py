"""The job routes' body bound: a JSON body of a job or sweep is a few hundred bytes (every map
in it holds at most `server.params.MAX_LAYERS` entries), so one over `MAX_JOB_BODY_BYTES` is
refused with 413 before it is parsed or validated. The front door (server/service/guard.py)
bounds every body at SIQ_MAX_BODY_BYTES; this bound is the job schema's own, far below it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from shared.errors import SIQError

__all__ = ["MAX_JOB_BODY_BYTES", "BoundedBodyRoute", "JobBodyTooLargeError"]

# far above the largest valid body (two full per-layer maps of 64-character names: ~5 KB)
MAX_JOB_BODY_BYTES = 64 * 1024


class JobBodyTooLargeError(SIQError):
    code = "body_too_large"
    http_status = 413


def _too_large(size: str) -> JobBodyTooLargeError:
    return JobBodyTooLargeError(
        f"the request body is {size} bytes; a job or sweep body is at most "
        f"{MAX_JOB_BODY_BYTES} bytes (every per-layer map is bounded)"
    )


class BoundedBodyRoute(APIRoute):
    """An APIRoute that refuses a body over MAX_JOB_BODY_BYTES before FastAPI reads it as
    JSON: by its Content-Length, or by its size once read (a body without a length, which
    the front door has bounded already)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            length = request.headers.get("content-length", "")
            declared = length.isascii() and length.isdigit()
            if declared and int(length) > MAX_JOB_BODY_BYTES:
                raise _too_large(length)
            if not declared:
                body = await request.body()  # kept by the request: the handler reads it again
                if len(body) > MAX_JOB_BODY_BYTES:
                    raise _too_large(str(len(body)))
            return await handler(request)

        return bounded
