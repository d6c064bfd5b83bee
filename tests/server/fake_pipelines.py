"""Stand-ins for server.training.pipeline that the job runner loads by dotted path
(`SIQ_PIPELINE=tests.server.fake_pipelines:<name>`) in its worker processes: fast, slow,
deaf to cancellation, or failing. Same interface as server.training.job.run_job: the job's
JobSpec in, the result dict out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from server.job_spec import JobSpec
from shared.bundle import bundle_id, encode_bundle, write_bundle_atomic
from shared.errors import ConfigError
from tests.factories import make_random_network


class FakeCancelled(Exception):
    pass


def succeed(spec: JobSpec, data_dir: Path | None, out_dir: Path, **hooks: Any) -> dict:
    """Two fake SIQ iterations, then a random (valid) bundle for the job's data set."""
    progress = hooks["progress"]
    progress({"stage": "training", "fraction": 0.2, "message": "epoch 1/1"})
    iterations = []
    for i in (1, 2):
        it = {
            "iteration": i,
            "accuracy_after_kmeans": 0.5,
            "accuracy_after_retrain": 0.6,
            "codebook_change": 0.1 / i,
        }
        iterations.append(it)
        progress({"stage": "retraining", "fraction": 0.4 * i, "message": "", "iteration": it})
    params = spec.params
    manifest, tensors = make_random_network(
        params.seed, weight_bits=params.weight_bits, activation_bits=params.activation_bits
    )
    manifest["provenance"] = {"dataset": params.dataset, "job_id": hooks.get("job_id")}
    manifest["metrics"] = {"float_accuracy": 0.9, "quantized_accuracy": 0.8}
    data = encode_bundle(manifest, tensors)
    path = write_bundle_atomic(out_dir, data)
    return {
        "float_accuracy": 0.9,
        "quantized_accuracy": 0.8,
        "bundle_id": bundle_id(data),
        "bundle_path": str(path),
        "bundle_bytes": len(data),
        "float_bytes": 4 * len(data),
        "iterations": iterations,
        "converged": True,
        "seconds": 0.1,
    }


def slow(spec: JobSpec, data_dir: Path | None, out_dir: Path, **hooks: Any) -> dict:
    """Trains 'forever' (60 s), polling should_cancel like the real pipeline."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        hooks["progress"]({"stage": "training", "fraction": 0.1, "message": "slow"})
        if hooks["should_cancel"]():
            raise FakeCancelled()
        time.sleep(0.05)
    raise AssertionError("the slow fake was never cancelled")


def deaf(spec: JobSpec, data_dir: Path | None, out_dir: Path, **hooks: Any) -> dict:
    """Never polls should_cancel: only terminating the process stops it."""
    hooks["progress"]({"stage": "training", "fraction": 0.1, "message": "deaf"})
    time.sleep(60)
    raise AssertionError("the deaf fake was never killed")


def fail(spec: JobSpec, data_dir: Path | None, out_dir: Path, **hooks: Any) -> dict:
    if spec.params.seed == 7:
        raise ConfigError("seed 7 is cursed")
    raise RuntimeError("boom")


def succeed_reporting_task(
    spec: JobSpec, data_dir: Path | None, out_dir: Path, **hooks: Any
) -> dict:
    """`succeed`, plus the process and the Ray task it ran in (None outside Ray)."""
    import os

    result = succeed(spec, data_dir, out_dir, **hooks)
    try:
        import ray

        task_id = ray.get_runtime_context().get_task_id() if ray.is_initialized() else None
    except ImportError:
        task_id = None
    return {**result, "pid": os.getpid(), "ray_task_id": task_id}


def cancel_while_packaging(
    spec: JobSpec, data_dir: Path | None, out_dir: Path, **hooks: Any
) -> dict:
    """Like `succeed`, but reports `packaging` and waits (up to 20 s) for a cancel, which it
    then ignores, as the real pipeline's last stages do: the runner must still honour it."""
    hooks["progress"]({"stage": "packaging", "fraction": 0.95, "message": "writing"})
    deadline = time.monotonic() + 20
    while not hooks["should_cancel"]() and time.monotonic() < deadline:
        time.sleep(0.05)
    return succeed(spec, data_dir, out_dir, **hooks)
