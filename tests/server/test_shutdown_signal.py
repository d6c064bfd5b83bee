"""SIGTERM to the server's whole process group (what systemd and `docker stop` send) marks a
running job `interrupted`, not `worker_crashed`: the workers leave stopping to the server."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from scripts.processes import start_service
from server.service.jobs import JobStore
from tests.conftest import child_env

pytestmark = pytest.mark.slow


def test_sigterm_to_the_process_group_interrupts_running_jobs(tmp_path: Path) -> None:
    env = child_env(
        tmp_path / "data",
        SIQ_STATE_DIR=str(tmp_path / "state"),
        SIQ_PIPELINE="tests.server.fake_pipelines:slow",
        SIQ_POLL_INTERVAL_S="0.05",  # the runner would reap a signalled worker at once
    )
    server = start_service("server", env=env, log_path=tmp_path / "server.log", own_session=True)
    with server:
        server.wait_ready(timeout=60)
        job = {"dataset": "digits", "weight_bits": 4, "activation_bits": 4}
        job_id = httpx.post(f"{server.url}/quantize-jobs", json=job).json()["id"]
        for _ in range(400):
            seen = httpx.get(f"{server.url}/quantize-jobs/{job_id}").json()
            if (seen.get("progress") or {}).get("stage") == "training":  # the worker is in
                break
            time.sleep(0.05)
        os.killpg(server.proc.pid, signal.SIGTERM)
        server.proc.wait(timeout=30)
    error = JobStore(tmp_path / "state" / "siq.db").get(job_id).error
    assert error is not None and error.code == "interrupted", (error, server.log_tail())
