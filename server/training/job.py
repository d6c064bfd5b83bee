"""The job entry: what a worker process or a Ray task runs for one job (`SIQ_PIPELINE`'s
default, server.training.job:run_job). It takes the job's `JobSpec` and runs what its role
asks for: a plain job the whole pipeline (server/training/pipeline.py), a sweep's lead or cell
its grid cell (server/training/sweep.py); the result comes back as a dict
(server/service/job_execution.py reads it as a `JobResult`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.job_spec import JobSpec, PlainJob, SweepCell, SweepLead
from server.progress import ProgressFn
from server.training.imported import run_network_pipeline
from server.training.pipeline import PipelineResult, run_pipeline
from server.training.sweep import run_sweep_run
from shared.errors import ConfigError

__all__ = ["run_job"]


def run_job(
    spec: JobSpec,
    data_dir: Path | None,
    out_dir: Path,
    *,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    job_id: str | None = None,
    checkpoint: bytes | None = None,
    on_checkpoint: Callable[[bytes], object] | None = None,
) -> dict[str, Any]:
    """Run one job; its bundle is written to `out_dir/<id>.siq`. ConfigError for a sweep
    cell without its lead's float checkpoint, or a job naming a network without its stored
    bytes (the executors hand either over as `checkpoint`)."""
    hooks: dict[str, Any] = {"progress": progress, "should_cancel": should_cancel, "job_id": job_id}
    result: PipelineResult
    match spec.role:
        case PlainJob() if spec.params.network is not None:
            if checkpoint is None:
                raise ConfigError(f"network {spec.params.network!r} was not given to the job")
            result = run_network_pipeline(spec.params, data_dir, out_dir, checkpoint, **hooks)
        case PlainJob():
            result = run_pipeline(spec.params, data_dir, out_dir, **hooks)
        case SweepLead():
            result = run_sweep_run(
                spec.params,
                data_dir,
                out_dir,
                checkpoint=None,
                on_checkpoint=on_checkpoint,
                **hooks,
            )
        case SweepCell(lead_job=lead):
            if checkpoint is None:
                raise ConfigError(f"the float checkpoint of sweep lead job {lead} was not given")
            result = run_sweep_run(spec.params, data_dir, out_dir, checkpoint=checkpoint, **hooks)
    return result.to_dict()
