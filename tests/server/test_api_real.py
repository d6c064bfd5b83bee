"""The API with the REAL pipeline (server.training.pipeline) in worker processes: a tiny digits job
to `succeeded` and its bundle, and mnist with missing/corrupt files to `failed`."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.service.app import create_app
from shared.bundle import decode_bundle
from tests.server.api_helpers import make_settings, wait_job

pytest.importorskip(
    "server.training.pipeline", reason="server.training.pipeline has not landed yet"
)
pytestmark = pytest.mark.slow

REAL = "server.training.job:run_job"
TINY_REAL_JOB = {
    "dataset": "digits",
    "weight_bits": 4,
    "activation_bits": 4,
    "epochs": 1,
    "max_iterations": 1,
    "retrain_epochs": 0.5,
    "kmeans": "lloyd",
    "train_limit": 300,
    "test_limit": 100,
}
MNIST_JOB = {**TINY_REAL_JOB, "dataset": "mnist"}


def test_tiny_real_job_succeeds_and_publishes_its_bundle(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, REAL))) as client:
        resp = client.post("/quantize-jobs", json=TINY_REAL_JOB)
        assert resp.status_code == 202, resp.text
        job = wait_job(client, resp.json()["id"], timeout=240)
        assert job["status"] == "succeeded", job
        result = job["result"]
        assert 0.0 <= result["quantized_accuracy"] <= 1.0
        assert result["bundle_bytes"] < result["float_bytes"]
        assert job["progress"]["stage"] == "packaging" and job["progress"]["fraction"] == 1.0
        assert len(job["iterations"]) >= 1

        bundle_id = result["bundle_id"]
        download = client.get(f"/bundles/{bundle_id}")
        assert download.status_code == 200
        assert hashlib.sha256(download.content).hexdigest() == bundle_id
        assert len(download.content) == result["bundle_bytes"]
        bundle = decode_bundle(download.content, bundle_id)
        assert bundle.manifest["metrics"]["quantized_accuracy"] == pytest.approx(
            result["quantized_accuracy"]
        )
        listed = client.get("/bundles").json()["items"]
        assert [b["id"] for b in listed] == [bundle_id]
        assert listed[0]["dataset"] == "digits" and listed[0]["job_id"] == job["id"]
        latest = client.get("/bundles/latest", params={"dataset": "digits"})
        assert latest.headers["X-SIQ-Bundle-Id"] == bundle_id


def _mnist_mirror_reachable() -> bool:
    try:
        socket.create_connection(("ossci-datasets.s3.amazonaws.com", 443), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("layout", ["empty", "corrupt"])
def test_missing_dataset_fails_the_job_and_server_keeps_serving(
    tmp_path: Path, layout: str
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if layout == "empty" and _mnist_mirror_reachable():
        pytest.skip("the loader would download MNIST into the empty folder")
    if layout == "corrupt":
        (data_dir / "mnist").mkdir()
        for name in (
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ):
            (data_dir / "mnist" / name).write_bytes(b"not mnist")
    with TestClient(create_app(make_settings(tmp_path, REAL, data_dir=data_dir))) as client:
        job_id = client.post("/quantize-jobs", json=MNIST_JOB).json()["id"]
        job = wait_job(client, job_id, timeout=120)
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "dataset_error"
        assert "mnist" in job["error"]["message"].lower()
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/quantize-jobs").json()["total"] == 1
