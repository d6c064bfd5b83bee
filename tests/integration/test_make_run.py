"""`make run`'s script as a user runs it: it starts both services, trains a small digits
bundle, recognises its sample image, prints curl commands, and on SIGINT stops both services
and exits cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, child_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc"),
]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # fields after "(comm)": state, ppid, ...
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_run_local_serves_a_digit_and_stops_on_ctrl_c(tmp_path: Path, data_dir: Path) -> None:
    env = child_env(data_dir)
    args = ["--dataset", "digits", "--epochs", "2", "--max-iterations", "1"]
    args += ["--train-limit", "300", "--server-port", "0", "--client-port", "0"]
    log = tmp_path / "run_local.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.run_local", *args, "--state-dir", str(tmp_path)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    children: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops" not in log.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        text = log.read_text()
        assert proc.poll() is None, text[-3000:]
        assert "> recognised" in text and '"results"' in text, text[-3000:]
        assert "curl -s -F file=@" in text
        assert (tmp_path / "sample-digits.png").is_file()
        children = _children(proc.pid)
        assert len(children) == 2, children

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "server and client stopped" in log.read_text()
        assert not [pid for pid in children if _alive(pid)], "a service outlived run_local"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
