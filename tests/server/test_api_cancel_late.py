"""A cancel accepted (202) while the pipeline evaluates or packages is honoured: the job ends
cancelled and its bundle is not published; one after success is answered 409."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.service.app import create_app
from tests.server.api_helpers import TINY_JOB, make_settings, wait_job

pytestmark = pytest.mark.slow


def test_cancel_during_packaging_ends_cancelled_unpublished(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "cancel_while_packaging", cancel_grace_s=30.0)
    with TestClient(create_app(settings)) as client:
        job_id = client.post("/quantize-jobs", json=TINY_JOB).json()["id"]
        wait_job(client, job_id, {"running"}, timeout=20)
        for _ in range(400):  # until the worker reports packaging
            job = client.get(f"/quantize-jobs/{job_id}").json()
            if (job.get("progress") or {}).get("stage") == "packaging":
                break
            time.sleep(0.05)
        assert client.post(f"/quantize-jobs/{job_id}/cancel").status_code == 202
        done = wait_job(client, job_id, timeout=20)
        assert done["status"] == "cancelled", done
        assert client.get("/bundles/latest", params={"dataset": "digits"}).status_code == 404
        assert client.get("/bundles").json()["items"] == []


def test_cancel_after_success_is_409(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, "succeed"))) as client:
        job_id = client.post("/quantize-jobs", json=TINY_JOB).json()["id"]
        assert wait_job(client, job_id)["status"] == "succeeded"
        resp = client.post(f"/quantize-jobs/{job_id}/cancel")
        assert resp.status_code == 409
        assert "succeeded" in resp.json()["error"]["message"]
