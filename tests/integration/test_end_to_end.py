"""The whole system as a user runs it: `python -m server` and `python -m client` as real
processes on loopback ports, a small quantisation job submitted over HTTP, the client picking
the new bundle up by itself, and PNG digits recognised through `/recognize`.

Both processes are stopped in the fixture's teardown, whatever the test's outcome."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import ServiceProcess, child_env, start_service, wait_until

pytestmark = pytest.mark.slow

TOKEN = "e2e-test-token"
HMAC_KEY = "e2e-test-signing-key"
DATASET = "digits"  # bundled with scikit-learn: the test needs no downloaded data
JOB = {
    "dataset": DATASET,
    "weight_bits": 4,
    "activation_bits": 4,
    "epochs": 6,
    "retrain_epochs": 1.0,
    "max_iterations": 1,
    "train_limit": 600,
    "test_limit": 40,
    "seed": 0,
}
N_IMAGES = 40  # the job's test set: the client sees the very images the server evaluated
JOB_TIMEOUT_S = 300.0  # ~30 s on a quiet 2-core machine; ~200 s measured with 8 users on it


@dataclass
class System:
    server: ServiceProcess
    client: ServiceProcess
    http: httpx.Client

    def logs(self) -> str:
        return (
            f"--- server log ---\n{self.server.log_tail()}\n"
            f"--- client log ---\n{self.client.log_tail()}"
        )


def _answers(service: ServiceProcess, http: httpx.Client, path: str) -> bool:
    if not service.alive():
        pytest.fail(f"{service.module} exited early:\n{service.log_tail()}")
    try:
        return http.get(service.url + path, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[System]:
    root = tmp_path_factory.mktemp("e2e")
    base = child_env(data_dir)
    server_env = {
        **base,
        "SIQ_STATE_DIR": str(root / "server"),
        "SIQ_API_TOKEN": TOKEN,
        "SIQ_BUNDLE_HMAC_KEY": HMAC_KEY,
    }
    started: list[ServiceProcess] = []
    http = httpx.Client()
    try:
        server = start_service("server", server_env, root / "server.log")
        started.append(server)
        client_env = {
            **base,
            "SIQ_STATE_DIR": str(root / "client"),
            "SIQ_SERVER_URL": server.url,
            "SIQ_BUNDLE": f"latest:{DATASET}",
            "SIQ_BUNDLE_HMAC_KEY": HMAC_KEY,
            "SIQ_POLL_INTERVAL_S": "0.5",
            "SIQ_RETRY_INTERVAL_S": "0.5",
        }
        client = start_service("client", client_env, root / "client.log")
        started.append(client)
        wait_until(lambda: _answers(server, http, "/healthz"), 60, what="server /healthz")
        wait_until(lambda: _answers(client, http, "/healthz"), 60, what="client /healthz")
        yield System(server, client, http)
    finally:
        http.close()
        for service in reversed(started):
            service.stop()


@pytest.fixture(scope="module")
def digit_pngs(data_dir: Path) -> tuple[list[bytes], np.ndarray]:
    """The first test-set digits as PNG files, and their labels."""
    from server.data import load_dataset

    ds = load_dataset(DATASET, data_dir, train_limit=1, test_limit=N_IMAGES)
    pngs = []
    for image in ds.test_x:  # (1, 28, 28) uint8
        buf = io.BytesIO()
        Image.fromarray(image[0]).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    return pngs, ds.test_y[: len(pngs)]


def _run_job(system: System) -> dict:
    url = system.server.url + "/quantize-jobs"
    refused = system.http.post(url, json=JOB, timeout=30)
    assert refused.status_code == 401, refused.text
    response = system.http.post(
        url, json=JOB, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    assert response.status_code == 202, response.text
    job_url = httpx.URL(system.server.url).join(response.headers["location"])

    def finished() -> dict | None:
        job = system.http.get(job_url, timeout=10).json()
        return job if job["status"] in {"succeeded", "failed", "cancelled"} else None

    job = wait_until(finished, JOB_TIMEOUT_S, interval=0.5, what="the quantisation job")
    assert job["status"] == "succeeded", f"{job.get('error')}\n{system.logs()}"
    return job


@pytest.fixture(scope="module")
def finished_job(system: System) -> dict:
    return _run_job(system)


def test_job_result_describes_a_small_bundle(system: System, finished_job: dict) -> None:
    result = finished_job["result"]
    assert len(result["bundle_id"]) == 64
    assert 0 < result["bundle_bytes"] < result["float_bytes"]
    assert result["quantized_accuracy"] > 0.5, result
    assert len(finished_job["iterations"]) >= 1
    listed = system.http.get(system.server.url + "/bundles", timeout=10).json()
    assert result["bundle_id"] in {b["id"] for b in listed["items"]}
    download = system.http.get(f"{system.server.url}/bundles/{result['bundle_id']}", timeout=10)
    assert download.status_code == 200 and len(download.content) == result["bundle_bytes"]
    assert download.headers.get("x-siq-signature"), "signing key set, but no signature sent"


def test_client_picks_up_the_bundle_and_recognises_digits(
    system: System, finished_job: dict, digit_pngs: tuple[list[bytes], np.ndarray]
) -> None:
    bundle_id = finished_job["result"]["bundle_id"]
    wait_until(lambda: _answers(system.client, system.http, "/readyz"), 30, what="client ready")
    served = system.http.get(system.client.url + "/bundle", timeout=10).json()
    assert served["id"] == bundle_id and served["dataset"] == DATASET, served

    pngs, labels = digit_pngs
    files = [("files", (f"d{i}.png", png, "image/png")) for i, png in enumerate(pngs)]
    response = system.http.post(system.client.url + "/recognize", files=files, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bundle_id"] == bundle_id
    predictions = body["results"]
    assert len(predictions) == len(pngs)
    assert {p["bundle_id"] for p in predictions} == {bundle_id}
    predicted = np.array([p["label"] for p in predictions])
    assert [p["class_name"] for p in predictions] == [str(label) for label in predicted]
    assert set(predicted.tolist()) <= set(range(10))
    accuracy = float(np.mean(predicted == labels))
    assert accuracy >= 0.7, f"accuracy {accuracy:.2f} on {len(pngs)} digits (chance is 0.1)"
    # The server measured its accuracy with the engine the client runs, on these images: the
    # PNG round trip through the client's preprocessing may move at most an image or two.
    reported = finished_job["result"]["quantized_accuracy"]
    assert abs(accuracy - reported) <= 2 / len(pngs), (accuracy, reported)

    # The single-file field and a raw image body give the same answer as the batch.
    one = system.http.post(
        system.client.url + "/recognize", files={"file": ("d0.png", pngs[0], "image/png")}
    )
    raw = system.http.post(
        system.client.url + "/recognize",
        content=pngs[0],
        headers={"Content-Type": "image/png"},
    )
    for single in (one, raw):
        assert single.status_code == 200, single.text
        assert single.json()["results"][0]["label"] == predicted[0]


def test_bad_requests_get_4xx_not_5xx(system: System, finished_job: dict) -> None:
    wait_until(lambda: _answers(system.client, system.http, "/readyz"), 30, what="client ready")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cases = [
        system.http.post(
            system.client.url + "/recognize",
            content=b"this is not an image",
            headers={"Content-Type": "image/png"},
        ),
        system.http.post(
            system.server.url + "/quantize-jobs",
            json={**JOB, "dataset": "no-such-dataset"},
            headers=auth,
        ),
        system.http.post(
            system.server.url + "/quantize-jobs", json={**JOB, "weight_bits": 99}, headers=auth
        ),
        system.http.get(system.server.url + "/quantize-jobs/no-such-job"),
        system.http.get(system.server.url + "/bundles/" + "0" * 64),
    ]
    for response in cases:
        assert 400 <= response.status_code < 500, (response.request.url, response.text)
        assert "error" in response.json(), response.text
    assert system.server.alive() and system.client.alive()
