"""What one job runs, for both executors (local worker processes and Ray tasks), and where a
sweep's float checkpoints live.

A job runs the configured pipeline (`SIQ_PIPELINE`, by default server.training.job:run_job),
a `PipelineFn`: the job's `JobSpec` in, its result out, its bundle written to `out_dir`. A
sweep cell (role `SweepCell`) starts from its lead's float checkpoint (`checkpoint`); a lead
(`SweepLead`) hands its own over through `on_checkpoint` as soon as it exists; every role
ends with a bundle. Torch-free: the pipeline is imported by name, in the process that runs
it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from server.job_spec import JobSpec, SweepCell
from server.progress import ProgressFn
from shared.api import IterationMetrics, JobResult
from shared.errors import ConfigError

__all__ = [
    "JobOutput",
    "PipelineFn",
    "execute_job",
    "resolve_pipeline",
    "lead_job",
    "checkpoint_path",
    "read_checkpoint",
    "write_checkpoint",
]


class PipelineFn(Protocol):
    """'module:function' that runs a job: the result as a dict of `JobResult`'s fields plus
    `iterations` (each an `IterationMetrics`); the bundle written as `out_dir/<id>.siq`."""

    def __call__(
        self,
        spec: JobSpec,
        data_dir: Path | None,
        out_dir: Path,
        *,
        progress: ProgressFn,
        should_cancel: Callable[[], bool],
        job_id: str,
        checkpoint: bytes | None,
        on_checkpoint: Callable[[bytes], object],
    ) -> dict[str, Any]: ...


@dataclass
class JobOutput:
    result: JobResult  # accuracies, sizes, bundle id, ...
    iterations: list[IterationMetrics]  # the SIQ iterations, in order
    bundle: bytes  # the bundle file's bytes


def resolve_pipeline(ref: str) -> PipelineFn:
    module, _, attr = ref.partition(":")
    try:
        fn: PipelineFn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"pipeline {ref!r} cannot be loaded: {exc}") from exc
    return fn


def lead_job(spec: JobSpec) -> str | None:
    """The sweep lead whose float checkpoint this job starts from (None: it trains its own)."""
    return spec.role.lead_job if isinstance(spec.role, SweepCell) else None


def checkpoint_path(checkpoint_dir: Path, job_id: str) -> Path:
    """Where the float checkpoint a sweep's lead job `job_id` trained is kept."""
    return checkpoint_dir / f"{job_id}.safetensors"


def read_checkpoint(checkpoint_dir: Path, job_id: str) -> bytes:
    try:
        return checkpoint_path(checkpoint_dir, job_id).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"the float checkpoint of job {job_id} is missing") from None


def write_checkpoint(checkpoint_dir: Path, job_id: str, data: bytes) -> Path:
    """Atomically (temporary name, then rename): a reader never sees half a checkpoint."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(checkpoint_dir, job_id)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def execute_job(
    pipeline_ref: str,
    spec: JobSpec,
    data_dir: Path | None,
    out_dir: Path,
    *,
    progress: ProgressFn,
    should_cancel: Callable[[], bool],
    job_id: str,
    checkpoint: bytes | None = None,
    on_checkpoint: Callable[[bytes], object],
) -> JobOutput:
    """Run the job; its bundle is written to `out_dir/<id>.siq` and returned as bytes too.
    A result the pipeline returns that is not a `JobResult` fails the job (ValidationError)."""
    raw = resolve_pipeline(pipeline_ref)(
        spec,
        data_dir,
        out_dir,
        progress=progress,
        should_cancel=should_cancel,
        job_id=job_id,
        checkpoint=checkpoint,
        on_checkpoint=on_checkpoint,
    )
    iterations = [IterationMetrics.model_validate(it) for it in raw.get("iterations") or ()]
    result = JobResult.model_validate(
        {k: v for k, v in raw.items() if k not in ("iterations", "bundle_path")}
    )
    bundle = (out_dir / f"{result.bundle_id}.siq").read_bytes()
    return JobOutput(result=result, iterations=iterations, bundle=bundle)
