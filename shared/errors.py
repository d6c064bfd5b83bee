"""The one exception hierarchy of SIQ. Mapped to HTTP status codes only at the edges
(the FastAPI apps); everything below raises these.

    SIQError
    ├── BundleError     a bundle is malformed, tampered, unsigned or of an unknown version
    ├── ImageError      an uploaded image cannot be decoded or is out of limits
    ├── DatasetError    a data set is missing, corrupt, or empty
    └── ConfigError     a setting or a job parameter cannot be used
"""

from __future__ import annotations

__all__ = ["SIQError", "BundleError", "ImageError", "DatasetError", "ConfigError"]


class SIQError(Exception):
    """Base class of every error SIQ raises on purpose."""

    code = "siq_error"


class BundleError(SIQError):
    code = "bad_bundle"


class ImageError(SIQError):
    code = "bad_image"


class DatasetError(SIQError):
    code = "dataset_error"


class ConfigError(SIQError):
    code = "bad_config"
