"""A fresh clone with no data beside it collects every test: nothing reads a data set when a
test module is imported (a pytest.skip there ended the whole collection), and the tests marked
`full_data` are deselected, saying why, rather than failing or skipping one by one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_the_suite_collects_without_any_data(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIQ_")}
    env["SIQ_DATA_DIR"] = str(tmp_path / "no-data")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    tail = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, tail
    assert "error" not in done.stdout.splitlines()[-1].lower(), tail
    assert "tests marked full_data deselected: no mnist/ or office10/ under" in done.stdout, tail
