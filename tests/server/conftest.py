"""Server test fixtures: torch on one thread (the machine is shared), seeded, and one tiny
real pipeline run (digits, a few hundred images) that several tests inspect."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _torch_one_thread() -> Iterator[None]:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real end-to-end pipeline on 500 digits: float training, 2 SIQ iterations, export,
    integer-engine evaluation. Returns the result, the bundle dir and the progress events."""
    import torch

    from server.params import JobParams
    from server.training.pipeline import run_pipeline

    torch.set_num_threads(1)
    out_dir: Path = tmp_path_factory.mktemp("bundles")
    events: list[dict] = []
    config = JobParams(
        dataset="digits",
        weight_bits=3,
        activation_bits=4,
        epochs=3,
        retrain_epochs=0.5,
        max_iterations=2,
        train_limit=500,
        test_limit=200,
        seed=1,
    )
    result = run_pipeline(config, None, out_dir, progress=events.append, job_id="job-test")
    return {"config": config, "result": result, "out_dir": out_dir, "events": events}


@pytest.fixture(scope="session")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """TINY_SWEEP run over HTTP by the local executor with two worker slots: the sweep's
    final status and every child job. The Ray tests compare against it."""
    from fastapi.testclient import TestClient

    from server.service.app import create_app
    from tests.server.api_helpers import REAL_PIPELINE, TINY_SWEEP, make_settings, wait_sweep

    settings = make_settings(
        tmp_path_factory.mktemp("local-sweep"), REAL_PIPELINE, max_concurrent_jobs=2
    )
    with TestClient(create_app(settings)) as client:
        resp = client.post("/quantize-sweeps", json=TINY_SWEEP)
        assert resp.status_code == 202, resp.text
        sweep = wait_sweep(client, resp.json()["id"])
        jobs = client.get("/quantize-jobs", params={"limit": 100}).json()["items"]
    return {"sweep": sweep, "jobs": jobs}
