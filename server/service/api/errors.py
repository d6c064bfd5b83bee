"""Where errors become HTTP responses. Every error body has the shape
`{"error": {"code": str, "message": str, "field": str | null}}` (shared.api.schemas.ErrorResponse).

Domain errors (SIQError) answer with the one mapping of shared/errors.py: `exc.http_status`
and `error_body(exc)` (404 not found, 409 conflict, 401/403 auth, 422 bad config or data
set, 500 bad_bundle: a stored file is corrupt, not the caller's fault). Besides those:

    request validation           422 invalid_request, `field` names the first bad field; a
                                 body that is not a JSON object (malformed, no JSON
                                 Content-Type, an array...) says so, with `field` "body"
    unknown route / method       404 not_found / 405 method_not_allowed
    no space left to write       507 insufficient_storage (SQLite's "database or disk is full",
                                 or ENOSPC / EDQUOT from a file write): the server's disk is
                                 full; reads keep working (server/service/app.py `_hold_open`)
    anything else                500 internal_error, naming no internals (server.service.guard)
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from shared.api import ErrorResponse
from shared.errors import SIQError, error_body, error_headers

__all__ = ["install_error_handlers", "error_response", "ERROR_RESPONSES", "STORAGE_RESPONSES"]

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
# what a route that writes can also answer
STORAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    507: {"model": ErrorResponse, "description": "insufficient_storage: the server's disk is full"},
}
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


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
    headers = error_headers(exc) or {}  # Retry-After on 429 queue_full
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(exc), status_code=status, headers=headers or None)


def _body_problem(request: Request, err: Mapping[str, Any]) -> str | None:
    """What is wrong with a JSON body as a whole, in words (None: a field's problem). Pydantic
    says "body: Input should be a valid dictionary" for a body sent without a JSON
    Content-Type, and names the character offset as the field of malformed JSON."""
    loc = tuple(err.get("loc", ()))
    if not loc or loc[0] != "body":
        return None
    if err.get("type") == "json_invalid":
        why = str((err.get("ctx") or {}).get("error", "malformed"))[:_MAX_NAME]
        at = f" at character {loc[1]}" if len(loc) > 1 else ""
        return f"the body is not valid JSON: {why}{at}"
    if len(loc) > 1 or isinstance(err.get("input"), dict):
        return None  # a field's problem, or a whole object's (a model validator's)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (content_type == "application/json" or content_type.endswith("+json")):
        sent = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        return f"the body must be a JSON object sent with Content-Type: application/json ({sent})"
    if err.get("type") == "missing":
        return "the body is empty: send a JSON object"
    kind = type(err.get("input")).__name__
    kind = {"list": "an array", "str": "a string", "int": "a number", "float": "a number"}.get(
        kind, kind
    )
    return f"the body must be a JSON object ({{...}}), not {kind}"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    for err in errors:
        whole = _body_problem(request, err)
        if whole is not None:  # then the fields' errors, if any, say nothing more
            return error_response(422, "invalid_request", whole, "body")
    problems, first_field = [], None
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


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    """507 when a write found no space (the cause named), else the 500 it always was."""
    if isinstance(exc, sqlite3.Error) and exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
        cause = str(exc)
    elif isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        cause = exc.strerror or str(exc)
    else:
        raise exc
    log.error("%s %s: no space to write: %s", request.method, request.url.path, cause)
    message = (
        f"the server's disk is full ({cause}), so nothing can be written; reads still work. "
        "Free space under SIQ_STATE_DIR and retry (/readyz says when it is writable again)"
    )
    return error_response(507, "insufficient_storage", message)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SIQError, _siq_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(sqlite3.Error, _storage_error)
    app.add_exception_handler(OSError, _storage_error)
