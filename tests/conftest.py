"""Fixtures every test package can use: where the data lives, and service processes
(scripts/processes.py) with a clean environment."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from scripts.processes import ServiceProcess
from scripts.processes import start_service as _start_service

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


def start_service(module: str, env: dict[str, str], log_path: Path) -> ServiceProcess:
    """`python -m module` on a free loopback port (scripts/processes.py); the caller stops it."""
    return _start_service(module, env=env, log_path=log_path)


def run_async(make_coro, timeout: float = 60):
    """`asyncio.run(make_coro())` in a thread of its own: the browser tests' Playwright keeps an
    event loop running in the main thread for the whole session, where asyncio.run refuses."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make_coro())).result(timeout=timeout)


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


@pytest.fixture(scope="session")
def mnist_w4a4_bytes(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> bytes:
    """One small real W4A4 MNIST bundle (3000 images, one epoch, one SIQ pass) for the whole
    session: the client's and the on-chip tests both read it, so it is trained once."""
    pipeline = pytest.importorskip("server.training.pipeline")
    from server.params import JobParams

    config = JobParams(
        dataset="mnist",
        weight_bits=4,
        activation_bits=4,
        epochs=1,
        retrain_epochs=0.25,
        max_iterations=1,
        seed=0,
        train_limit=3000,
        test_limit=300,
    )
    out = tmp_path_factory.mktemp("mnist-w4a4")
    result = pipeline.run_pipeline(config, mnist_dir.parent, out)
    return (out / f"{result.bundle_id}.siq").read_bytes()
