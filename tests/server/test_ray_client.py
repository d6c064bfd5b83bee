"""SIQ_RAY_ADDRESS=ray://host:port (Ray Client, what the compose `ray` profile's server uses)
against a real head started by `ray start --head --ray-client-server-port`: the runner connects
through the client port and one job runs as a Ray task and comes back with its bundle."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.service.app import create_app
from shared.bundle import bundle_id
from tests.server.api_helpers import TINY_JOB, make_settings, wait_job

ray = pytest.importorskip("ray", reason="Ray is the optional '.[ray]' extra (make install adds it)")
pytest.importorskip("grpc", reason="Ray Client (ray://) needs ray[client] (grpcio)")

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
MARKER_VAR = "SIQ_TEST_RAY_HEAD"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_marked(marker: str) -> list[int]:
    """Processes whose environment holds MARKER_VAR=marker: the head and all it started
    (Ray renames its agents' command lines, `ray::DashboardAgent`, but not their env)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _client_port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-CPU head with a Ray Client server, in a session directory of its own (no other
    test's `ray.init()` finds it as "the latest cluster"); its processes carry a marker in
    their environment, so all are found, and proved gone, at the end. Yields its ray://
    address."""
    temp_dir = tmp_path_factory.mktemp("rayhead")
    client_port = _free_port()
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", f"--port={_free_port()}",
        f"--ray-client-server-port={client_port}", "--num-cpus=1", "--include-dashboard=false",
        f"--dashboard-agent-listen-port={_free_port()}", f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]  # fmt: skip
    # The workers import the test's fake pipelines from this checkout. Token auth is off
    # for this loopback head (a client must set RAY_AUTH_MODE=token itself to send one, as
    # the compose stack does; the smoke test runs that). An earlier local `ray.init()` in this
    # process set RAY_AUTH_MODE=token in its environment, so it is overridden here.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "RAY_AUTH_MODE": "disabled",
        MARKER_VAR: str(temp_dir),
    }
    log = (temp_dir / "ray-start.log").open("wb")
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + 90
        while not _client_port_answers(client_port):
            if head.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (temp_dir / "ray-start.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"`ray start --head` gave no client port {client_port}:\n{tail}")
            time.sleep(0.5)
        yield f"ray://127.0.0.1:{client_port}"
    finally:
        # `ray start --block` stops the raylet and GCS on SIGTERM, but slowly, and Ray 2.60
        # leaves the dashboard and runtime-env agents running (they ignore SIGTERM): all it
        # started get SIGTERM, and what is left two seconds later SIGKILL.
        marker = str(temp_dir)
        _signal_all(_processes_marked(marker), signal.SIGTERM)
        deadline = time.monotonic() + 2
        while head.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal_all(_processes_marked(marker), signal.SIGKILL)
        head.wait(10)
        log.close()
        deadline = time.monotonic() + 10
        while _processes_marked(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _processes_marked(marker), "the Ray head's processes outlived SIGKILL"


@pytest.fixture
def no_ray_connection_left() -> Iterator[None]:
    """Whatever the test's outcome, no Ray connection outlives it (the next module's tests
    start a cluster of their own in this process)."""
    try:
        yield
    finally:
        if ray.is_initialized():
            ray.shutdown()


def test_a_job_runs_through_a_ray_client_address(
    ray_head: str, tmp_path: Path, no_ray_connection_left: None
) -> None:
    assert not ray.is_initialized()  # the runner makes (and ends) the client connection
    settings = make_settings(
        tmp_path, "succeed_reporting_task", executor="ray", ray_address=ray_head
    )
    with TestClient(create_app(settings)) as client:
        job_id = client.post("/quantize-jobs", json=TINY_JOB).json()["id"]
        done = wait_job(client, job_id, timeout=120)
        assert done["status"] == "succeeded", done
        result = done["result"]
        # It ran in a worker of the head, not in this process, and says which node.
        assert result["ray_task_id"] and result["pid"] != os.getpid()
        assert result["ray_node"]["pid"] == result["pid"]
        assert len(result["ray_node"]["node_id"]) == 56  # Ray's hex node id
        resp = client.get(f"/bundles/{result['bundle_id']}")
        assert resp.status_code == 200 and bundle_id(resp.content) == result["bundle_id"]
    assert not ray.is_initialized()  # stop disconnected the client
