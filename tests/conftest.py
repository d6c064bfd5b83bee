"""Fixtures every test package can use: where the data lives, free loopback ports, and
service processes that are always stopped, even when a test fails."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """$SIQ_DATA_DIR when set, else ../shared/data beside the checkout (the CI layout)."""
    env = os.environ.get("SIQ_DATA_DIR")
    if env:
        return Path(env).resolve()
    return (REPO_ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data directory (holds mnist/ and office10/); it may lack some data sets."""
    return default_data_dir()


@pytest.fixture(scope="session")
def mnist_dir(data_dir: Path) -> Path:
    """The MNIST IDX folder; skips the test when the files are not there."""
    path = data_dir / "mnist"
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST not found under {data_dir} (set SIQ_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def office10_dir(data_dir: Path) -> Path:
    """The office10 image folder; skips the test when it is not there."""
    path = data_dir / "office10"
    if not (path / "test").is_dir():
        pytest.skip(f"office10 not found under {data_dir} (set SIQ_DATA_DIR)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """A `python -m <module>` child with its output in a log file; `stop()` is idempotent."""

    def __init__(self, module: str, port: int, env: dict[str, str], log_path: Path):
        self.module = module
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL: a child never outlives its test."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self._log.close()


def start_service(module: str, env: dict[str, str], log_path: Path) -> ServiceProcess:
    return ServiceProcess(module, free_port(), env, log_path)


def wait_until(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll `predicate()` until it returns a truthy value; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def child_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """An environment for a service child process: this one minus every SIQ_* variable (so a
    developer's shell cannot leak in), plus SIQ_DATA_DIR and the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIQ_")}
    env.update(SIQ_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.update(settings)
    return env


@pytest.fixture
def service_env(data_dir: Path) -> dict[str, str]:
    """`child_env(data_dir)` as a fixture: SIQ_* settings cleared, the data dir set."""
    return child_env(data_dir)
