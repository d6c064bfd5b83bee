"""`python -m client --workers N` / SIQ_WORKERS: several server processes on one port, each
serving the bundle; a bad count is refused with status 2 before any process starts."""

from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np
import pytest

from shared.bundle import bundle_id
from tests.client.conftest import png_bytes
from tests.conftest import REPO_ROOT, run_async, start_service, wait_until


def worker_pids(supervisor: int) -> set[int]:
    done = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(supervisor)], capture_output=True, text=True
    )
    return {int(p) for p in done.stdout.split()}


@pytest.mark.slow
def test_two_worker_processes_serve_one_port(tmp_path, service_env, bundle_a):
    path = tmp_path / "a.siq"
    path.write_bytes(bundle_a)
    env = dict(
        service_env, SIQ_BUNDLE=str(path), SIQ_STATE_DIR=str(tmp_path / "state"), SIQ_WORKERS="2"
    )
    service = start_service("client", env, tmp_path / "client.log")
    try:
        service.wait_ready("/readyz", timeout=90)
        # the supervisor's children: the two workers (uvicorn may add a resource tracker)
        wait_until(lambda: len(worker_pids(service.proc.pid)) >= 2, 60, what="two workers")
        digit = png_bytes(np.pad(np.zeros((14, 8), np.uint8), 7, constant_values=255))
        with httpx.Client(base_url=service.url, timeout=30) as http:
            for _ in range(6):
                answer = http.post("/recognize", files={"file": ("d.png", digit)})
                assert answer.status_code == 200
                assert answer.json()["bundle_id"] == bundle_id(bundle_a)
            assert http.get("/v2/health/ready").status_code == 200
    finally:
        service.stop(grace=20)
    assert not worker_pids(service.proc.pid)  # no worker outlives the supervisor


@pytest.mark.parametrize("flag, env", [(["--workers", "0"], {}), ([], {"SIQ_WORKERS": "x"})])
def test_a_bad_worker_count_is_refused(tmp_path, service_env, bundle_a, flag, env):
    path = tmp_path / "a.siq"
    path.write_bytes(bundle_a)
    done = subprocess.run(
        [sys.executable, "-m", "client", "--port", "0", *flag],
        cwd=REPO_ROOT,
        env=dict(service_env, SIQ_BUNDLE=str(path), SIQ_STATE_DIR=str(tmp_path), **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to start" in done.stderr and "workers" in done.stderr.lower()


def test_a_worker_socket_names_tcp_so_its_connections_get_nodelay():
    """asyncio sets TCP_NODELAY only where the socket says TCP; without it every answer
    waited for the caller's delayed ACK (44 ms a request with uvicorn's own worker sockets)."""
    import asyncio
    import socket

    from client.workers import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    seen: list[int] = []

    async def main():
        async def handle(reader, writer):
            conn = writer.get_extra_info("socket")
            seen.append(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        await server.wait_closed()

    run_async(main)
    assert seen and seen[0] != 0
