"""What one job runs, for both executors (local worker processes and Ray tasks), and where a
sweep's float checkpoints live.

A job runs the configured pipeline (`SIQ_PIPELINE`, by default
server.training.pipeline:run_job). A sweep marks its cells in their config under `"sweep"`:

    {"id": S, "role": "lead"}                     trains the float model of its seed, hands
                                                  the float checkpoint over as soon as it
                                                  exists (`on_checkpoint`), then quantises
    {"id": S, "role": "child", "float_job": J}    quantises from job J's float checkpoint

so the float model trains once per seed. Every role ends with a bundle, so every cell is an
ordinary job. Torch-free: the pipeline is imported by name, in the process that runs it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import ConfigError

__all__ = [
    "JobOutput",
    "PipelineFn",
    "execute_job",
    "resolve_pipeline",
    "sweep_role",
    "float_job_of",
    "checkpoint_path",
    "read_checkpoint",
    "write_checkpoint",
]

# 'module:function' (config dict, data_dir, out_dir, progress=, should_cancel=, job_id=,
# and for sweep cells checkpoint=, on_checkpoint=) -> result dict.
PipelineFn = Callable[..., dict[str, Any]]


@dataclass
class JobOutput:
    result: dict[str, Any]  # the pipeline's result dict (bundle_id, accuracies, ...)
    bundle: bytes  # the bundle file's bytes


def resolve_pipeline(ref: str) -> PipelineFn:
    module, _, attr = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"pipeline {ref!r} cannot be loaded: {exc}") from exc


def sweep_role(config: dict[str, Any]) -> dict[str, Any] | None:
    role = config.get("sweep")
    return role if isinstance(role, dict) else None


def float_job_of(config: dict[str, Any]) -> str | None:
    """The lead job whose float checkpoint a sweep child starts from (None for others)."""
    role = sweep_role(config)
    return str(role["float_job"]) if role and role.get("role") == "child" else None


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
    config: dict[str, Any],
    data_dir: Path | None,
    out_dir: Path,
    *,
    progress: Callable[[Any], None],
    should_cancel: Callable[[], bool],
    job_id: str,
    checkpoint: bytes | None = None,
    on_checkpoint: Callable[[bytes], object] | None = None,
) -> JobOutput:
    """Run the job; its bundle is written to `out_dir/<id>.siq` and returned as bytes too.
    Only a sweep cell gets the checkpoint hooks (a plain pipeline need not know them)."""
    hooks: dict[str, Any] = {"progress": progress, "should_cancel": should_cancel}
    if sweep_role(config) is not None:
        hooks.update(checkpoint=checkpoint, on_checkpoint=on_checkpoint)
    result = resolve_pipeline(pipeline_ref)(config, data_dir, out_dir, job_id=job_id, **hooks)
    bundle = (out_dir / f"{result['bundle_id']}.siq").read_bytes()
    return JobOutput(result=result, bundle=bundle)
