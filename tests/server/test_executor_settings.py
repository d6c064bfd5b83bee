"""Choosing the executor: local by default without importing Ray, one clear line when
SIQ_EXECUTOR=ray but Ray is not installed, and SIQ_RAY_ADDRESS checked at start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.service.app import create_app, serve_main
from server.service.local_runner import JobRunner
from server.service.settings import load_settings
from shared.errors import ConfigError
from tests.conftest import REPO_ROOT
from tests.server.api_helpers import make_settings


def _without_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails like a missing one
    for name in ("server.service.ray_runner", "server.service.ray_task"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_local_is_the_default_and_never_imports_ray() -> None:
    code = (
        "import sys, tempfile\n"
        "from server.service.app import create_app\n"
        "from server.service.settings import ServerSettings\n"
        "app = create_app(ServerSettings(state_dir=tempfile.mkdtemp()))\n"
        "print(type(app.state.ctx.runner).__name__, 'ray' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["JobRunner", "False"]


def test_ray_executor_without_ray_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _without_ray(monkeypatch)
    with pytest.raises(ConfigError, match=r"SIQ_EXECUTOR=ray needs Ray.*\.\[ray\]"):
        create_app(make_settings(tmp_path, executor="ray"))
    assert isinstance(create_app(make_settings(tmp_path)).state.ctx.runner, JobRunner)
    monkeypatch.setenv("SIQ_STATE_DIR", str(tmp_path / "cli"))
    monkeypatch.setenv("SIQ_EXECUTOR", "ray")
    assert serve_main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install" in err[0], err


@pytest.mark.parametrize("address", ["auto", "local", "ray://head:10001", "10.0.0.5:6379"])
def test_ray_addresses_accepted(address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIQ_RAY_ADDRESS", address)
    assert load_settings().ray_address == address


@pytest.mark.parametrize("address", ["", "ray://", "http://head:8265", "head"])
def test_bad_ray_address_names_the_variable(address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIQ_RAY_ADDRESS", address or " ")
    with pytest.raises(ConfigError, match="SIQ_RAY_ADDRESS"):
        load_settings()


def test_bad_executor_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIQ_EXECUTOR", "slurm")
    with pytest.raises(ConfigError, match="SIQ_EXECUTOR"):
        load_settings()
