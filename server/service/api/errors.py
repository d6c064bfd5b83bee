"""Where errors become HTTP responses. Every error body has the shape
`{"error": {"code": str, "message": str, "field": str | null}}` (shared.schemas.ErrorResponse).

Domain errors (SIQError) answer with the one mapping of shared/errors.py: `exc.http_status`
and `error_body(exc)` (404 not found, 409 conflict, 401/403 auth, 422 bad config or data
set, 500 bad_bundle: a stored file is corrupt, not the caller's fault). Besides those:

    request validation           422 invalid_request, `field` names the first bad field
    unknown route / method       404 not_found / 405 method_not_allowed
    anything else                500 internal_error, naming no internals (server.service.guard)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from shared.api import ErrorResponse
from shared.errors import SIQError, error_body

__all__ = ["install_error_handlers", "error_response", "ERROR_RESPONSES"]

log = logging.getLogger(__name__)

_MAX_PROBLEMS, _MAX_NAME = 10, 200

# For the OpenAPI description of routes.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "a malformed request (e.g. not JSON)"},
    401: {"model": ErrorResponse, "description": "missing bearer token"},
    403: {"model": ErrorResponse, "description": "wrong bearer token"},
    404: {"model": ErrorResponse, "description": "no such job or bundle"},
    409: {"model": ErrorResponse, "description": "conflicts with the job's state"},
    408: {"model": ErrorResponse, "description": "the body did not arrive in time"},
    413: {"model": ErrorResponse, "description": "the body is over SIQ_MAX_BODY_BYTES"},
    422: {"model": ErrorResponse, "description": "invalid request; `field` names the culprit"},
}


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _siq_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SIQError)
    status = exc.http_status
    if status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(exc), status_code=status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems, first_field = [], None
    errors = exc.errors()
    for err in errors[:_MAX_PROBLEMS]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        name = ".".join(loc)[:_MAX_NAME] or "body"
        first_field = first_field or name
        message = str(err.get("msg", "invalid"))[:_MAX_NAME]
        if err.get("type") == "extra_forbidden":
            message = "unknown field (not a job parameter)"
        problems.append(f"{name}: {message}")
    if len(errors) > _MAX_PROBLEMS:  # an answer never echoes a hostile body back at length
        problems.append(f"... and {len(errors) - _MAX_PROBLEMS} more problems")
    return error_response(422, "invalid_request", "; ".join(problems), first_field)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
        message = f"{message}: {request.method} {request.url.path} (the API is listed at /docs)"
    headers = exc.headers
    if exc.status_code == 405:  # Starlette names only the first route's methods
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return error_response(exc.status_code, code, message, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of this path takes (routes are split by method)."""
    allowed: set[str] = set()
    for route in request.app.router.routes:
        methods = getattr(route, "methods", None)
        if methods and route.matches(request.scope)[0] != Match.NONE:
            allowed |= set(methods)
    return sorted(allowed)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SIQError, _siq_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
