"""What one job runs, for both executors (local worker processes and Ray tasks).

A job runs the configured pipeline (`SIQ_PIPELINE`, by default server.training.job:run_job),
a `PipelineFn`: the job's `JobSpec` in, its result out, its bundle written to `out_dir`. A
sweep cell (role `SweepCell`) starts from its lead's float checkpoint (`checkpoint`); a lead
(`SweepLead`) hands its own over through `on_checkpoint` as soon as it exists; every role
ends with a bundle. Torch-free: the pipeline is imported by name, in the process that runs
it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from server.job_spec import JobSpec
from server.progress import ProgressFn
from shared.api import IterationMetrics, JobResult
from shared.errors import ConfigError

__all__ = [
    "JobOutput",
    "PipelineFn",
    "execute_job",
    "resolve_pipeline",
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
