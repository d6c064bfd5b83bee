"""scripts/processes.py, the one "start `python -m X`, wait until ready, stop it" helper, on a
tiny stand-in service: ready after a delay, one that dies at start, one that ignores SIGTERM."""

from __future__ import annotations

import os
import socket
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from scripts.processes import ServiceError, pick_port, start_service

# `python -m fakesvc --host H --port P [--delay S] [--die] [--stubborn]`
FAKE_SERVICE = textwrap.dedent(
    """
    import argparse, signal, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    p = argparse.ArgumentParser()
    p.add_argument("--host"); p.add_argument("--port", type=int)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--die", action="store_true"); p.add_argument("--stubborn", action="store_true")
    args = p.parse_args()
    print("fakesvc starting", flush=True)
    if args.die:
        sys.exit("fakesvc: refusing to start: no bundle")
    if args.stubborn:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready_at = time.monotonic() + args.delay

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            ok = time.monotonic() >= ready_at
            self.send_response(200 if ok else 503)
            self.end_headers()
            self.wfile.write(b"ok" if ok else b"wait")

        def log_message(self, *a):
            pass

    HTTPServer((args.host, args.port), Handler).serve_forever()
    """
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "fakesvc.py").write_text(FAKE_SERVICE)
    return {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONUNBUFFERED": "1"}


def _answering(url: str, timeout: float = 30.0) -> None:
    """Wait until the stand-in answers HTTP at all (any status)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url + "/readyz", timeout=1.0)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_pick_port_prefers_the_given_port_and_falls_back_when_busy() -> None:
    free = pick_port(0)
    assert pick_port(free) == free
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        other = pick_port(taken)
    assert other != taken and other > 0


def test_waits_until_ready_then_stops(env: dict[str, str], tmp_path: Path) -> None:
    with start_service(
        "fakesvc", env=env, log_path=tmp_path / "svc.log", args=["--delay", "0.5"]
    ) as svc:
        answer = svc.wait_ready("/readyz", timeout=30, interval=0.05)
        assert answer.status_code == 200 and answer.text == "ok"
        assert httpx.get(svc.url + "/x").status_code == 200
    assert not svc.alive() and svc.proc.returncode == -15  # SIGTERM sufficed
    assert "fakesvc starting" in svc.log_tail()


def test_a_child_that_dies_is_reported_with_its_log(env: dict[str, str], tmp_path: Path) -> None:
    svc = start_service("fakesvc", env=env, log_path=tmp_path / "svc.log", args=["--die"])
    try:
        with pytest.raises(ServiceError, match="exited with code 1") as failure:
            svc.wait_ready(timeout=30)
        assert "refusing to start: no bundle" in str(failure.value)
    finally:
        svc.stop()


def test_never_ready_times_out_with_the_log(env: dict[str, str], tmp_path: Path) -> None:
    args = ["--delay", "3600"]
    with start_service("fakesvc", env=env, log_path=tmp_path / "svc.log", args=args) as svc:
        _answering(svc.url)  # a loaded machine may take over 1 s just to start Python
        with pytest.raises(ServiceError, match=r"not 200 after 1 s \(last answer 503\)") as err:
            svc.wait_ready("/readyz", timeout=1, interval=0.05)
        assert "fakesvc starting" in str(err.value)
    assert _gone(svc.proc.pid) or svc.proc.returncode is not None


def test_a_child_ignoring_sigterm_is_killed_after_the_grace(
    env: dict[str, str], tmp_path: Path
) -> None:
    args = ["--stubborn"]
    svc = start_service("fakesvc", env=env, log_path=tmp_path / "svc.log", args=args)
    svc.wait_ready(timeout=30, interval=0.05)
    start = time.monotonic()
    assert svc.stop(grace=0.5) == -9
    assert 0.5 <= time.monotonic() - start < 10
    assert svc.stop() == -9  # idempotent


def test_an_appended_log_quotes_only_this_run(env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    log.write_text("an earlier run's last words\n")
    svc = start_service("fakesvc", env=env, log_path=log, args=["--die"], append_log=True)
    try:
        with pytest.raises(ServiceError) as failure:
            svc.wait_ready(timeout=30)
    finally:
        svc.stop()
    assert "earlier run" not in str(failure.value) and "earlier run" in log.read_text()
