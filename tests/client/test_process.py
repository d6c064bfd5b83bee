"""`python -m client` as a real process: it starts, serves a bundle file, answers on loopback,
stops cleanly on SIGTERM, and exits with status 2 and a clear line on a bad configuration."""

from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np
import pytest

from shared.bundle import bundle_id
from tests.client.conftest import png_bytes
from tests.conftest import REPO_ROOT, start_service


@pytest.mark.slow
def test_client_process_serves_a_bundle_file(tmp_path, service_env, bundle_a):
    path = tmp_path / "a.siq"
    path.write_bytes(bundle_a)
    env = dict(service_env, SIQ_BUNDLE=str(path), SIQ_STATE_DIR=str(tmp_path / "state"))
    service = start_service("client", env, tmp_path / "client.log")
    try:
        service.wait_ready("/readyz", timeout=60)  # ServiceError with the log tail if not
        digit = png_bytes(np.pad(np.zeros((14, 8), np.uint8), 7, constant_values=255))
        answer = httpx.post(service.url + "/recognize", files={"file": ("d.png", digit)})
        assert answer.status_code == 200 and answer.json()["bundle_id"] == bundle_id(bundle_a)
    finally:
        service.stop()
    log = service.log_path.read_text()
    # uvicorn re-raises SIGTERM after a graceful shutdown, so -15 is a clean exit too
    assert service.proc.returncode in (0, -15) and "Application shutdown complete" in log, log


def test_client_process_refuses_a_bad_configuration(tmp_path, service_env):
    env = dict(service_env, SIQ_BUNDLE="latest:mnist", SIQ_STATE_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "client", "--port", "0"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to start" in done.stderr and "SIQ_SERVER_URL" in done.stderr
