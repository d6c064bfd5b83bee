"""Pydantic schemas of what the HTTP APIs answer, shared by the server, the client and the
tests (`*Public` is what the API returns). The body of POST /quantize-jobs is the server's
job-parameter model, server/params.py. Every error response of both services has the
shape of `ErrorResponse`: `{"error": {"code": "...", "message": "...", "field": ...}}`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
    "HealthStatus",
]

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class Progress(BaseModel):
    stage: str = Field(description="loading, training, quantizing, retraining, ...")
    fraction: float = Field(ge=0, le=1)
    message: str = ""


class IterationMetrics(BaseModel):
    """One SIQ iteration: validation accuracy after k-means and after retraining."""

    model_config = ConfigDict(extra="allow")

    iteration: int
    accuracy_after_kmeans: float | None = None
    accuracy_after_retrain: float | None = None
    codebook_change: float | None = None


class JobResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    float_accuracy: float
    quantized_accuracy: float
    bundle_id: str
    bundle_bytes: int
    float_bytes: int
    seconds: float
    converged: bool | None = None
    published: bool | None = Field(None, description="false: kept by id, not made latest")
    publish_note: str | None = Field(None, description="why it was or was not published")
    ray_node: dict[str, Any] | None = Field(
        None, description="SIQ_EXECUTOR=ray: where the job's Ray task ran (node_id, host, pid)"
    )


class ErrorInfo(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. dataset_error")
    message: str = Field(description="what went wrong and what to do about it")
    field: str | None = Field(None, description="the request field at fault, if any")


class ErrorResponse(BaseModel):
    error: ErrorInfo


class JobRoleInfo(BaseModel):
    """How a job's float model comes to be: `plain` trains its own; a sweep's `sweep_lead`
    trains the one its seed's other cells (`sweep_cell`, naming the `lead_job`) start from."""

    kind: Literal["plain", "sweep_lead", "sweep_cell"] = "plain"
    sweep_id: str | None = Field(default=None, description="the sweep of a lead or cell")
    lead_job: str | None = Field(default=None, description="a cell: the lead job it starts from")


class QuantizeJobPublic(BaseModel):
    id: str
    status: JobStatus
    dataset: str
    weight_bits: int
    activation_bits: int
    config: dict[str, Any] = Field(description="the parameters as submitted")
    role: JobRoleInfo = JobRoleInfo()
    created: datetime
    started: datetime | None = None
    finished: datetime | None = None
    cancel_requested: bool = False
    progress: Progress | None = None
    iterations: list[IterationMetrics] = Field(default_factory=list)
    result: JobResult | None = None
    error: ErrorInfo | None = None
    links: dict[str, str] = Field(default_factory=dict)


class QuantizeJobList(BaseModel):
    """A page of jobs, newest first. `next_offset` is null on the last page."""

    items: list[QuantizeJobPublic]
    total: int
    limit: int
    offset: int
    next_offset: int | None = None


class BundleInfo(BaseModel):
    id: str = Field(description="SHA-256 (hex) of the bundle file")
    dataset: str
    weight_bits: int
    activation_bits: int
    quantized_accuracy: float | None = None
    float_accuracy: float | None = None
    bytes: int
    created: datetime
    job_id: str | None = None


class BundleList(BaseModel):
    items: list[BundleInfo]


class ClassCount(BaseModel):
    train: int
    test: int


class DatasetInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    classes: list[str]
    train_count: int
    test_count: int
    image_size: list[int]
    class_counts: dict[str, ClassCount] | None = Field(
        None, description="image files per class and split (image folders)"
    )
    uploaded: bool = Field(False, description="uploaded over POST /datasets (DELETE-able)")


class NetworkInfo(BaseModel):
    """A network uploaded as a float ONNX model (GET /networks)."""

    name: str
    input_shape: list[int] = Field(description="(C, H, W) of the images it takes")
    num_classes: int
    parameters: int = Field(description="float weights, batch-norm statistics included")
    nodes: int = Field(description="nodes of its graph in the integer contract")
    onnx_sha256: str | None = None
    onnx_bytes: int | None = None
    created: str | None = None
    graph: list[dict[str, Any]] = Field(description="the contract's nodes (DAG form)")


class HealthStatus(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
