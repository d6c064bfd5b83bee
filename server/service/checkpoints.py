"""Where a sweep's float checkpoints live: the float model a sweep lead job trained, kept
under the state directory (`ServerSettings.checkpoint_dir`) as `<lead job id>.safetensors`
(server/training/sweep.py makes and reads the bytes; the executors carry them here and back).
"""

from __future__ import annotations

import os
from pathlib import Path

from shared.errors import ConfigError

__all__ = ["checkpoint_path", "read_checkpoint", "write_checkpoint"]


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
