"""The one exception hierarchy of SIQ. Everything below the HTTP edge raises these; each app
maps them to status codes in one place (server/api/errors.py, client/app.py).

    SIQError
    ├── BundleError             a bundle is malformed, tampered, unsigned or of an unknown version
    ├── ImageError              an uploaded image cannot be used                          (422)
    │   ├── UnsupportedImageError   not an image in a supported format                    (415)
    │   ├── ImageTooLargeError      too many pixels (decompression bomb) or too many bytes (413)
    │   └── UploadError             the request does not carry images the way /recognize takes them
    ├── DatasetError            a data set is missing, corrupt, or empty
    ├── ConfigError             a setting or a job parameter cannot be used               (422)
    │   └── UnknownDatasetError     a job names a data set the server does not have
    ├── NotFoundError           no such job or bundle                                     (404)
    ├── ConflictError           contradicts a job's state or an earlier request           (409)
    ├── AuthError               missing (401) or wrong (403) bearer token
    └── NotReadyError           the client has no bundle loaded yet                       (503)

`code` is the machine-readable error code that API error bodies carry.
"""

from __future__ import annotations

__all__ = [
    "SIQError",
    "BundleError",
    "ImageError",
    "UnsupportedImageError",
    "ImageTooLargeError",
    "UploadError",
    "DatasetError",
    "ConfigError",
    "UnknownDatasetError",
    "NotFoundError",
    "ConflictError",
    "AuthError",
    "NotReadyError",
]


class SIQError(Exception):
    """Base class of every error SIQ raises on purpose."""

    code = "siq_error"


class BundleError(SIQError):
    code = "bad_bundle"


class ImageError(SIQError):
    code = "bad_image"


class UnsupportedImageError(ImageError):
    code = "unsupported_image"


class ImageTooLargeError(ImageError):
    code = "image_too_large"


class UploadError(ImageError):
    code = "bad_upload"


class DatasetError(SIQError):
    code = "dataset_error"


class ConfigError(SIQError):
    code = "bad_config"


class UnknownDatasetError(ConfigError):
    code = "unknown_dataset"
    field = "dataset"


class NotFoundError(SIQError):
    code = "not_found"


class ConflictError(SIQError):
    code = "conflict"


class AuthError(SIQError):
    """`status_code` is 401 for a missing token and 403 for a wrong one."""

    code = "unauthorized"

    def __init__(self, message: str, status_code: int = 401) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = "unauthorized" if status_code == 401 else "forbidden"


class NotReadyError(SIQError):
    code = "not_ready"
