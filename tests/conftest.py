"""Fixtures every test package can use: the data (the committed sample in tests/data for
ordinary tests; the whole data sets in $SIQ_DATA_DIR for those marked `full_data`, which are
deselected where they are missing), and service processes (scripts/processes.py) with a clean
environment."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench.report import default_data_dir  # $SIQ_DATA_DIR, else ../shared/data
from scripts.processes import ServiceProcess
from scripts.processes import start_service as _start_service
from tests.samples import SAMPLE_DIR, sample_mnist_source

REPO_ROOT = Path(__file__).resolve().parents[1]


# how many full_data tests were deselected, and why (for the summary line)
_FULL_DATA_DESELECTED = pytest.StashKey[tuple[int, str]]()


def full_data_missing(path: Path) -> str | None:
    """Why `path` cannot serve the `full_data` tests (MNIST's four files and office10), or None."""
    from server.data.mnist import MNIST_FILES

    lacking = [
        what
        for what, there in (
            ("mnist/", all((path / "mnist" / name).is_file() for name in MNIST_FILES)),
            ("office10/", (path / "office10" / "test").is_dir()),
        )
        if not there
    ]
    return f"no {' or '.join(lacking)} under {path}" if lacking else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without the whole data sets, the `full_data` tests are deselected (said in the summary),
    not skipped one by one, unless the run asked for them by name (`-m full_data`): then their
    fixtures fail saying what is missing."""
    why = full_data_missing(default_data_dir())
    if why is None or "full_data" in (config.option.markexpr or ""):
        return
    dropped = [item for item in items if item.get_closest_marker("full_data")]
    if dropped:
        items[:] = [item for item in items if not item.get_closest_marker("full_data")]
        config.hook.pytest_deselected(items=dropped)
        config.stash[_FULL_DATA_DESELECTED] = (len(dropped), why)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _FULL_DATA_DESELECTED in config.stash:
        count, why = config.stash[_FULL_DATA_DESELECTED]
        terminalreporter.write_line(
            f"{count} tests marked full_data deselected: {why} "
            "(set SIQ_DATA_DIR to the folder holding the whole data sets to run them)"
        )


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data directory the tests' services get (SIQ_DATA_DIR): the committed sample
    (tests/data: office10 as an image folder), the same on every machine."""
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def office10_dir() -> Path:
    """The sample's office10 image folder: 10 classes, 4 training and 3 test photos each."""
    return SAMPLE_DIR / "office10"


@pytest.fixture(scope="session")
def full_data_dir() -> Path:
    """The whole data sets ($SIQ_DATA_DIR), for tests marked `full_data`; fails saying what
    is missing when they were asked for without it."""
    path = default_data_dir()
    why = full_data_missing(path)
    if why is not None:
        pytest.fail(f"the full_data tests need the whole data sets: {why} (set SIQ_DATA_DIR)")
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
def mnist_w4a4_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """One small real W4A4 MNIST bundle (the sample's 3000 first images, one epoch, one SIQ
    pass) for the whole session: the client's and the on-chip tests both read it, so it is
    trained once."""
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
    with sample_mnist_source():
        result = pipeline.run_pipeline(config, None, out)
    return (out / f"{result.bundle_id}.siq").read_bytes()
