"""Helpers for the server API tests: settings on a temporary state dir and polling."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from server.job_spec import JobSpec
from server.params import JobParams
from server.service.settings import ServerSettings
from shared.api import JobResult

FAKE = "tests.server.fake_pipelines"
TINY_JOB = {"dataset": "digits", "weight_bits": 4, "activation_bits": 4}
TERMINAL = {"succeeded", "failed", "cancelled"}


def plain_job(params: dict[str, Any]) -> JobSpec:
    """A plain job of these parameters, as the POST /quantize-jobs route makes one."""
    return JobSpec(params=JobParams.model_validate(params))


def job_result(bundle_id: str = "0" * 64, **fields: Any) -> JobResult:
    """A job's result with made-up figures."""
    figures = {"float_accuracy": 0.9, "quantized_accuracy": 0.8, "bundle_bytes": 1000}
    return JobResult.model_validate(
        {**figures, "float_bytes": 4000, "seconds": 1.0, "bundle_id": bundle_id, **fields}
    )


def make_settings(tmp_path: Path, pipeline: str = "succeed", **overrides: Any) -> ServerSettings:
    """Settings isolated from the environment; `pipeline` names a fake or a full reference."""
    ref = pipeline if ":" in pipeline else f"{FAKE}:{pipeline}"
    values: dict[str, Any] = {
        "state_dir": tmp_path / "state",
        "data_dir": tmp_path / "data",
        "pipeline": ref,
        "poll_interval_s": 0.05,
        "cancel_grace_s": 1.0,
        "api_token": None,
        "bundle_hmac_key": None,
    }
    values.update(overrides)
    return ServerSettings(_env_file=None, **values)  # type: ignore[call-arg]


def wait_job(
    client: TestClient, job_id: str, statuses: set[str] = TERMINAL, timeout: float = 60.0
) -> dict:
    """Poll GET /quantize-jobs/{id} until its status is in `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get(f"/quantize-jobs/{job_id}")
        assert resp.status_code == 200, resp.text
        job = resp.json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
        time.sleep(0.05)


# A 2 x 2 bit grid small enough for a test: 300 digits, one SIQ iteration, Lloyd k-means.
TINY_SWEEP = {
    "dataset": "digits",
    "weight_bits": [2, 4],
    "activation_bits": [3, 4],
    "seeds": [1],
    "epochs": 3,
    "retrain_epochs": 0.25,
    "max_iterations": 1,
    "kmeans": "lloyd",
    "train_limit": 300,
    "test_limit": 100,
}
REAL_PIPELINE = "server.training.job:run_job"


def wait_sweep(client: TestClient, sweep_id: str, timeout: float = 900.0) -> dict:
    """Poll GET /quantize-sweeps/{id} until the sweep is no longer running."""
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get(f"/quantize-sweeps/{sweep_id}")
        assert resp.status_code == 200, resp.text
        sweep = resp.json()
        if sweep["status"] != "running":
            return sweep
        if time.monotonic() > deadline:
            raise AssertionError(f"sweep {sweep_id} still running after {timeout} s: {sweep}")
        time.sleep(0.1)
