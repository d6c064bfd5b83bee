"""Browser-test fixtures: Debian's Chromium driven headless by Playwright for Python, the
services started as real processes, and a folder for the screenshots.

The tests skip, saying why, when the `playwright` package or a `chromium` binary is missing
(`apt-get install chromium`; .ci/run installs it). Playwright never downloads a browser here:
it is given the system binary as `executable_path`.

Screenshots (and the PNG drawings the pad sent) go to `$SIQ_TEST_ARTIFACTS` when set, else
`tests/artifacts/` (git-ignored), one sub-folder per test module.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.processes import ServiceProcess
from tests.conftest import REPO_ROOT, child_env, start_service

# Flags for a closed network (no outside connections in CI): no background
# connections to Google's services, no sandbox (CI runs as root), no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
]
DESKTOP = {"viewport": {"width": 1280, "height": 860}}
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (make install: dev extra)"
    )
    binary = chromium_binary()
    if binary is None:
        pytest.skip("Chromium is not installed: apt-get install -y chromium (.ci/run does)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def serve(module: str, data_dir: Path, root: Path, **settings: str) -> Iterator[ServiceProcess]:
    """`python -m module` (server or client) with its state and log under `root`, until the
    generator is closed: `yield from serve(...)` in a module-scoped fixture."""
    env = child_env(data_dir, SIQ_STATE_DIR=str(root / "state"), **settings)
    service = start_service(module, env, root / f"{module}.log")
    try:
        service.wait_ready("/readyz")
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def artifacts(request: pytest.FixtureRequest) -> Path:
    """Where this module's screenshots go."""
    root = Path(os.environ.get("SIQ_TEST_ARTIFACTS") or REPO_ROOT / "tests" / "artifacts")
    path = root / request.module.__name__.rsplit(".", 1)[-1]
    path.mkdir(parents=True, exist_ok=True)
    return path
