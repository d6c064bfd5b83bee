"""What both services' HTTP APIs share.

schemas  pydantic models of what the APIs answer (jobs, bundles, data sets, errors, health)
pages    pages_router: a folder of static browser pages
"""

from shared.api.pages import MEDIA_TYPES, PAGE_HEADERS, pages_router
from shared.api.schemas import (
    TERMINAL_STATUSES,
    BundleInfo,
    BundleList,
    DatasetInfo,
    ErrorInfo,
    ErrorResponse,
    HealthStatus,
    IterationMetrics,
    JobResult,
    JobRoleInfo,
    JobStatus,
    NetworkInfo,
    Progress,
    QuantizeJobList,
    QuantizeJobPublic,
)

__all__ = [
    "JobStatus",
    "TERMINAL_STATUSES",
    "Progress",
    "IterationMetrics",
    "JobResult",
    "ErrorInfo",
    "ErrorResponse",
    "JobRoleInfo",
    "QuantizeJobPublic",
    "QuantizeJobList",
    "BundleInfo",
    "BundleList",
    "DatasetInfo",
    "NetworkInfo",
    "HealthStatus",
    "MEDIA_TYPES",
    "PAGE_HEADERS",
    "pages_router",
]
