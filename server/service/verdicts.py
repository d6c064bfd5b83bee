"""How a job that did not succeed is recorded, the same whichever executor ran it: the error a
person reads in the job's `error` (code + message)."""

from __future__ import annotations

from shared.api import ErrorInfo
from shared.errors import SIQError, error_body

__all__ = ["INTERRUPTED", "job_error", "interrupted", "error_record"]

INTERRUPTED = "the server stopped while this job was running, so the job was lost; submit it again"


def job_error(code: str, message: str) -> ErrorInfo:
    """A job's error that names no request field."""
    return ErrorInfo(code=code, message=message, field=None)


def interrupted() -> ErrorInfo:
    """The error of a job whose process went with a stopped server."""
    return job_error("interrupted", INTERRUPTED)


def error_record(exc: BaseException) -> ErrorInfo:
    """A failed job's `error`, one a person can act on: an SIQError's own body (the shared
    mapping), anything else an internal error."""
    if isinstance(exc, SIQError):
        return ErrorInfo.model_validate(error_body(exc)["error"])
    if isinstance(exc, MemoryError):
        return job_error("internal_error", "the worker ran out of memory")
    return job_error("internal_error", f"{type(exc).__name__}: {exc}")
