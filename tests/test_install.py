"""`make install`: torch comes from TORCH_INDEX_URL (default the CPU index, as server/Dockerfile's
build argument), pinned as pyproject.toml pins it; each long pip step is announced first; an
empty TORCH_INDEX_URL leaves torch to pip's configuration. Checked with `make -n` on a copy of
the Makefile, so nothing is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

CPU_INDEX = "https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def planned_install(tmp_path: Path, *overrides: str) -> list[str]:
    """The commands `make install` would run in a checkout without .venv."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    done = subprocess.run(
        ["make", "-n", "install", *overrides],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def torch_pin() -> str:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    return re.search(r'"torch==([^"]+)"', pyproject).group(1)  # type: ignore[union-attr]


def test_torch_comes_from_the_cpu_index_by_default_and_pip_steps_are_announced(
    tmp_path: Path,
) -> None:
    lines = planned_install(tmp_path)
    pips = [i for i, line in enumerate(lines) if " -m pip install " in line]
    assert len(pips) == 2, lines
    torch_step, siq_step = (lines[i] for i in pips)
    assert f"'torch=={torch_pin()}' --index-url '{CPU_INDEX}'" in torch_step
    assert "-e '.[server,client,dev,ray]'" in siq_step and "index-url" not in siq_step
    for i in pips:  # each long step says what it does first
        assert lines[i - 1].startswith('echo "==> make install: '), lines[i - 1]
    assert "TORCH_INDEX_URL" in lines[pips[0] - 1]


def test_the_index_is_a_variable(tmp_path: Path) -> None:
    cuda = "https://download.pytorch.org/whl/cu128"
    assert any(
        f"--index-url '{cuda}'" in line
        for line in planned_install(tmp_path, f"TORCH_INDEX_URL={cuda}")
    )
    mine = planned_install(tmp_path, "TORCH_INDEX_URL=")
    assert not any("torch==" in line for line in mine)  # torch from pip's configuration
    assert sum(" -m pip install " in line for line in mine) == 1


def test_the_server_image_uses_the_same_index_by_default() -> None:
    dockerfile = (REPO_ROOT / "server" / "Dockerfile").read_text()
    assert f"ARG TORCH_INDEX_URL={CPU_INDEX}" in dockerfile
    assert f'pip install torch=={torch_pin()} --index-url "$TORCH_INDEX_URL"' in dockerfile
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert f"TORCH_INDEX_URL ?= {CPU_INDEX}" in makefile
