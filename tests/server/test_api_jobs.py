"""/quantize-jobs through HTTP with fake pipelines in real worker processes: submit, poll,
validate, idempotency, cancel (cooperative and by termination), failures, restarts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.service.app import create_app
from tests.server.api_helpers import TINY_JOB, make_settings, plain_job, wait_job

pytestmark = pytest.mark.slow


def test_submit_poll_succeeded_with_iterations_and_links(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        resp = client.post("/quantize-jobs", json={**TINY_JOB, "epochs": 1})
        assert resp.status_code == 202, resp.text
        job = resp.json()
        assert job["status"] == "queued"
        assert resp.headers["Location"] == f"/quantize-jobs/{job['id']}"
        assert job["config"] == {**TINY_JOB, "epochs": 1}
        done = wait_job(client, job["id"])
        assert done["status"] == "succeeded", done
        assert [it["iteration"] for it in done["iterations"]] == [1, 2]
        assert done["result"]["quantized_accuracy"] == 0.8
        assert "bundle_path" not in done["result"]  # no server paths in the API
        assert done["links"]["bundle"] == f"/bundles/{done['result']['bundle_id']}"
        assert done["started"] is not None and done["finished"] is not None
        listed = client.get("/quantize-jobs").json()
        assert listed["total"] == 1 and listed["items"][0]["id"] == job["id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**TINY_JOB, "weight_bits": 9}, "weight_bits"),
        ({**TINY_JOB, "activation_bits": 1}, "activation_bits"),
        ({"dataset": "digits", "weight_bits": 4}, "activation_bits"),
        ({**TINY_JOB, "epochs": "three"}, "epochs"),
        ({**TINY_JOB, "learning_rate": 0.1}, "learning_rate"),
        ({**TINY_JOB, "kmeans": "fancy"}, "kmeans"),
        ({**TINY_JOB, "dataset": "../etc"}, "dataset"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(tmp_path: Path, body: dict, field: str) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        resp = client.post("/quantize-jobs", json=body)
        assert resp.status_code == 422
        error = resp.json()["error"]
        assert error["field"] == field
        assert field in error["message"]
        assert client.get("/quantize-jobs").json()["total"] == 0


def test_unknown_dataset_is_422_listing_available(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        resp = client.post("/quantize-jobs", json={**TINY_JOB, "dataset": "imagenet"})
        assert resp.status_code == 422
        error = resp.json()["error"]
        assert error["code"] == "unknown_dataset" and error["field"] == "dataset"
        assert "digits" in error["message"] and "mnist" in error["message"]


def test_malformed_json_is_422_not_500(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        resp = client.post(
            "/quantize-jobs", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 422
        assert resp.json()["error"]["code"] == "invalid_request"


def test_idempotency_key_returns_same_job(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, "slow"))) as client:
        headers = {"Idempotency-Key": "abc-123"}
        first = client.post("/quantize-jobs", json=TINY_JOB, headers=headers)
        again = client.post("/quantize-jobs", json=TINY_JOB, headers=headers)
        assert first.status_code == again.status_code == 202
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        clash = client.post("/quantize-jobs", json={**TINY_JOB, "seed": 3}, headers=headers)
        assert clash.status_code == 409
        assert "abc-123" in clash.json()["error"]["message"]
        assert client.get("/quantize-jobs").json()["total"] == 1
        client.post(f"/quantize-jobs/{first.json()['id']}/cancel")


def test_paging_newest_first(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, "slow"))) as client:
        ids = [
            client.post("/quantize-jobs", json={**TINY_JOB, "seed": i}).json()["id"]
            for i in range(5)
        ]
        page = client.get("/quantize-jobs", params={"limit": 2, "offset": 2}).json()
        assert [j["id"] for j in page["items"]] == [ids[2], ids[1]]
        assert page["total"] == 5 and page["next_offset"] == 4
        last = client.get("/quantize-jobs", params={"limit": 2, "offset": 4}).json()
        assert last["next_offset"] is None
        assert client.get("/quantize-jobs", params={"limit": 0}).status_code == 422
        for job_id in ids:
            client.post(f"/quantize-jobs/{job_id}/cancel")


@pytest.mark.parametrize("pipeline", ["slow", "deaf"])
def test_cancel_running_job_stops_promptly(tmp_path: Path, pipeline: str) -> None:
    """`slow` polls should_cancel; `deaf` never does and must be terminated."""
    with TestClient(create_app(make_settings(tmp_path, pipeline))) as client:
        job_id = client.post("/quantize-jobs", json=TINY_JOB).json()["id"]
        wait_job(client, job_id, {"running"}, timeout=20)
        resp = client.post(f"/quantize-jobs/{job_id}/cancel")
        assert resp.status_code == 202
        assert resp.json()["cancel_requested"] is True
        done = wait_job(client, job_id, timeout=8)
        assert done["status"] == "cancelled"
        again = client.post(f"/quantize-jobs/{job_id}/cancel")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "conflict"
        # the worker slot is free again
        nxt = client.post("/quantize-jobs", json=TINY_JOB).json()["id"]
        wait_job(client, nxt, {"running"}, timeout=20)
        client.post(f"/quantize-jobs/{nxt}/cancel")


def test_cancel_queued_job_is_immediate(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, "slow"))) as client:
        first = client.post("/quantize-jobs", json=TINY_JOB).json()["id"]
        second = client.post("/quantize-jobs", json={**TINY_JOB, "seed": 1}).json()["id"]
        resp = client.post(f"/quantize-jobs/{second}/cancel")
        assert resp.json()["status"] == "cancelled"
        client.post(f"/quantize-jobs/{first}/cancel")
        assert client.post("/quantize-jobs/nope/cancel").status_code == 404


def test_pipeline_errors_fail_the_job_and_server_keeps_serving(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, "fail"))) as client:
        crash = client.post("/quantize-jobs", json=TINY_JOB).json()["id"]
        bad = client.post("/quantize-jobs", json={**TINY_JOB, "seed": 7}).json()["id"]
        crashed, rejected = wait_job(client, crash), wait_job(client, bad)
        assert crashed["status"] == "failed"
        assert crashed["error"] == {
            "code": "internal_error",
            "message": "RuntimeError: boom",
            "field": None,
        }
        assert rejected["error"]["code"] == "bad_config"
        assert "cursed" in rejected["error"]["message"]
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


def test_restart_leaves_no_job_running_and_keeps_queued(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "deaf")
    with TestClient(create_app(settings)) as client:
        running = client.post("/quantize-jobs", json=TINY_JOB).json()["id"]
        queued = client.post("/quantize-jobs", json={**TINY_JOB, "seed": 1}).json()["id"]
        wait_job(client, running, {"running"}, timeout=20)
    with TestClient(create_app(settings)) as client:
        lost = client.get(f"/quantize-jobs/{running}").json()
        assert lost["status"] == "failed" and lost["error"]["code"] == "interrupted"
        assert "submit it again" in lost["error"]["message"]
        running_now = client.get("/quantize-jobs", params={"status": "running"}).json()["items"]
        assert {j["id"] for j in running_now} <= {queued}  # only the queued one may start
        wait_job(client, queued, {"running"}, timeout=20)  # the queued job survived and runs


def test_unknown_job_is_404(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        resp = client.get("/quantize-jobs/does-not-exist")
        assert resp.status_code == 404
        assert "does-not-exist" in resp.json()["error"]["message"]


def test_max_concurrent_jobs_bounds_the_workers(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, "slow", max_concurrent_jobs=2))) as client:
        ids = [
            client.post("/quantize-jobs", json={**TINY_JOB, "seed": i}).json()["id"]
            for i in range(3)
        ]
        wait_job(client, ids[0], {"running"}, timeout=20)
        wait_job(client, ids[1], {"running"}, timeout=20)
        assert client.get(f"/quantize-jobs/{ids[2]}").json()["status"] == "queued"
        client.post(f"/quantize-jobs/{ids[0]}/cancel")
        wait_job(client, ids[2], {"running"}, timeout=20)  # the freed slot is reused
        for job_id in ids:
            client.post(f"/quantize-jobs/{job_id}/cancel")


def test_shutdown_stops_workers_and_start_fails_orphaned_running_jobs(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "deaf")
    app = create_app(settings)
    with TestClient(app) as client:
        job_id = client.post("/quantize-jobs", json=TINY_JOB).json()["id"]
        wait_job(client, job_id, {"running"}, timeout=20)
        deadline = time.monotonic() + 20  # until the worker itself reports
        while client.get(f"/quantize-jobs/{job_id}").json()["progress"]["message"] != "deaf":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        processes = [w.process for w in app.state.ctx.runner._workers.values()]
        assert len(processes) == 1 and processes[0].is_alive()
    assert not processes[0].is_alive()  # the lifespan's end stopped the worker

    # A server that died without a shutdown leaves a job `running` in the database.
    store = app.state.ctx.jobs
    orphan, _ = store.create(plain_job({**TINY_JOB, "seed": 9}))
    assert store.claim_next() is not None
    with TestClient(create_app(settings)) as client:
        job = client.get(f"/quantize-jobs/{orphan.id}").json()
        assert job["status"] == "failed" and job["error"]["code"] == "interrupted"
        assert client.get("/quantize-jobs", params={"status": "running"}).json()["total"] == 0


def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    """The README and the OpenAPI promise `Retry-After` with 429 `queue_full` (issue 28, 7)."""
    settings = make_settings(tmp_path, "slow", max_concurrent_jobs=1, max_queued_jobs=1)
    with TestClient(create_app(settings)) as client:
        answers = [client.post("/quantize-jobs", json={**TINY_JOB, "seed": i}) for i in range(3)]
        refused = answers[-1]
        assert refused.status_code == 429, [a.status_code for a in answers]
        assert refused.json()["error"]["code"] == "queue_full"
        assert int(refused.headers["Retry-After"]) > 0
        for answer in answers[:-1]:
            if answer.status_code < 300:  # the first may still be queued when the second comes
                client.post(f"/quantize-jobs/{answer.json()['id']}/cancel")
