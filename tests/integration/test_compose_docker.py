"""The compose stack on a real Docker engine (scripts/compose_smoke.py): skipped where no
engine and compose CLI answer, or unless SIQ_COMPOSE_SMOKE=1 asks for it, because a run
builds two images and takes minutes (.ci/run runs it after `make test` when it can start an
engine; see README, "Docker compose")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from scripts.compose_smoke import SKIP, compose_command, engine_available
from tests.conftest import REPO_ROOT


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_compose_stack_trains_serves_scales_restarts_keeps_bundles_and_runs_on_ray(tmp_path):
    if os.environ.get("SIQ_COMPOSE_SMOKE") != "1":
        pytest.skip("set SIQ_COMPOSE_SMOKE=1 to build and run the compose stack (minutes)")
    if compose_command() is None or not engine_available():
        pytest.skip("no Docker engine or compose CLI (docker compose / docker-compose) here")
    out = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, "-m", "scripts.compose_smoke", "--json", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=1700,
    )  # fmt: skip
    if done.returncode == SKIP:
        pytest.skip(done.stderr.strip())
    assert done.returncode == 0, done.stderr[-6000:]
    result = json.loads(out.read_text())
    assert min(result["accuracy"]) >= 0.8 and len(result["accuracy"]) == 3
    assert result["interrupted_job"] == {"status": "failed", "error": "interrupted"}
    # the `ray` profile: two jobs, one Ray task on each of the two worker containers
    assert len({job["ray_node"]["host"] for job in result["ray"]["jobs"]}) == 2
