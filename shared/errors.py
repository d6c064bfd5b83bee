"""The one exception hierarchy of SIQ, and the one mapping of it to HTTP. Everything below the
HTTP edge raises these; each app's error handler answers `error_body(exc)` with status
`exc.http_status` (the number on the right; the class's own unless it says otherwise).

    SIQError                    anything else the caller's request cannot be served for   (400)
    ├── BundleError             a bundle is malformed, tampered, unsigned or of an unknown version
    │                           (500: a stored or fetched file is bad, not the caller's fault)
    ├── ImageError              an uploaded image cannot be used                          (422)
    │   ├── UnsupportedImageError   not an image in a supported format                    (415)
    │   ├── ImageTooLargeError      too many pixels (decompression bomb) or too many bytes (413)
    │   └── UploadError             the request does not carry images the way /recognize takes them
    │       └── BodyTimeoutError        the request body did not arrive in time               (408)
    ├── DatasetError            a data set is missing, corrupt, or empty                  (422)
    │   └── ArchiveError            an uploaded data-set archive cannot be used
    │       ├── ArchiveTooLargeError    over a size, file-count or compression-ratio limit (413)
    │       └── UnsupportedArchiveError not a zip, tar or tar.gz archive                (415)
    ├── ConfigError             a setting or a job parameter cannot be used               (422)
    │   ├── UnknownDatasetError     a job names a data set the server does not have
    │   └── UnsupportedModelError   a valid bundle whose graph the C generator cannot express
    ├── NotFoundError           no such job or bundle                                     (404)
    ├── ConflictError           contradicts a job's state or an earlier request           (409)
    ├── AuthError               missing (401) or wrong (403) bearer token
    ├── NotReadyError           the client has no bundle loaded yet                       (503)
    └── OverloadedError         too many requests waiting already; `retry_after` s   (503 + Retry-After)
        └── QueueFullError          the job queue is at its bound (SIQ_MAX_QUEUED_JOBS)  (429 + Retry-After)

`code` is the machine-readable error code that API error bodies carry; `field`, where a class
or an instance sets it, names the request field at fault.
"""

from __future__ import annotations

__all__ = [
    "error_body",
    "error_headers",
    "SIQError",
    "BundleError",
    "ImageError",
    "UnsupportedImageError",
    "ImageTooLargeError",
    "UploadError",
    "BodyTimeoutError",
    "DatasetError",
    "ArchiveError",
    "ArchiveTooLargeError",
    "UnsupportedArchiveError",
    "ConfigError",
    "UnknownDatasetError",
    "NotFoundError",
    "ConflictError",
    "AuthError",
    "NotReadyError",
    "OverloadedError",
    "UnsupportedModelError",
    "QueueFullError",
]


class SIQError(Exception):
    """Base class of every error SIQ raises on purpose. `http_status` is the status an HTTP
    edge answers it with; a subclass that forgets to set one is a plain 400."""

    code = "siq_error"
    http_status: int = 400


class BundleError(SIQError):
    code = "bad_bundle"
    http_status = 500


class ImageError(SIQError):
    code = "bad_image"
    http_status = 422


class UnsupportedImageError(ImageError):
    code = "unsupported_image"
    http_status = 415


class ImageTooLargeError(ImageError):
    code = "image_too_large"
    http_status = 413


class UploadError(ImageError):
    code = "bad_upload"


class BodyTimeoutError(UploadError):
    code = "body_timeout"
    http_status = 408


class DatasetError(SIQError):
    code = "dataset_error"
    http_status = 422


class ArchiveError(DatasetError):
    code = "bad_archive"


class ArchiveTooLargeError(ArchiveError):
    code = "archive_too_large"
    http_status = 413


class UnsupportedArchiveError(ArchiveError):
    code = "unsupported_archive"
    http_status = 415


class ConfigError(SIQError):
    code = "bad_config"
    http_status = 422


class UnknownDatasetError(ConfigError):
    code = "unknown_dataset"
    field = "dataset"


class NotFoundError(SIQError):
    code = "not_found"
    http_status = 404


class ConflictError(SIQError):
    code = "conflict"
    http_status = 409


class AuthError(SIQError):
    """`status_code` is 401 for a missing token and 403 for a wrong one."""

    code = "unauthorized"
    http_status = 401

    def __init__(self, message: str, status_code: int = 401) -> None:
        super().__init__(message)
        self.status_code = self.http_status = status_code
        self.code = "unauthorized" if status_code == 401 else "forbidden"


class NotReadyError(SIQError):
    code = "not_ready"
    http_status = 503


class OverloadedError(SIQError):
    """Refused to keep latency bounded; the answer carries `Retry-After: retry_after` (s)."""

    code = "overloaded"
    http_status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnsupportedModelError(ConfigError):
    code = "unsupported_model"


class QueueFullError(OverloadedError):
    """Too many jobs already queued: the caller should submit later (the queue drains)."""

    code = "queue_full"
    http_status = 429


def error_body(exc: SIQError) -> dict[str, dict[str, str | None]]:
    """The JSON body of an error answer, `shared.api.schemas.ErrorResponse`'s shape:
    `{"error": {"code", "message", "field"}}`; send it with status `exc.http_status`."""
    return {"error": {"code": exc.code, "message": str(exc), "field": getattr(exc, "field", None)}}


def error_headers(exc: SIQError) -> dict[str, str] | None:
    """Headers an error answer carries: `Retry-After` when the error says when to retry."""
    retry_after = getattr(exc, "retry_after", None)
    return {"Retry-After": str(retry_after)} if retry_after is not None else None
