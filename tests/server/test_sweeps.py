"""/quantize-sweeps on the local executor: a real 2 x 2 digits grid whose float model trains
once, validation of the grid, cancel, and the accuracy x bits summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.job_spec import JobSpec, SweepCell, SweepLead
from server.params import JobParams, QuantizeSweepCreate
from server.service.app import create_app
from server.service.checkpoints import write_checkpoint
from server.service.jobs import JobStore, connect, utcnow
from server.service.sweeps import SweepStore, _best
from tests.server.api_helpers import REAL_PIPELINE, TINY_SWEEP, make_settings, wait_job, wait_sweep

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1200)  # the one real sweep of the session: minutes on a loaded machine
def test_sweep_runs_every_cell_as_a_job_from_one_float_model(local_sweep: dict) -> None:
    sweep, jobs = local_sweep["sweep"], local_sweep["jobs"]
    assert sweep["status"] == "succeeded", sweep
    runs = sweep["runs"]
    assert {(r["weight_bits"], r["activation_bits"]) for r in runs} == {
        (2, 3),
        (2, 4),
        (4, 3),
        (4, 4),
    }
    assert [r["role"] for r in runs].count("lead") == 1
    lead = next(r for r in runs if r["role"] == "lead")
    by_id = {j["id"]: j for j in jobs}
    assert {r["job_id"] for r in runs} == set(by_id), "every cell is an ordinary job"
    for run in runs:
        job = by_id[run["job_id"]]
        assert job["status"] == "succeeded"
        assert "sweep" not in job["config"]  # the role is the job's, not a parameter
        assert job["role"]["sweep_id"] == sweep["id"]
        assert job["result"]["quantized_accuracy"] == run["quantized_accuracy"]
        if run["role"] == "child":
            assert job["role"] == {
                "kind": "sweep_cell",
                "sweep_id": sweep["id"],
                "lead_job": lead["job_id"],
            }
        else:
            assert job["role"]["kind"] == "sweep_lead"
    # One float model: every cell reports the lead's float accuracy.
    assert len({r["float_accuracy"] for r in runs}) == 1
    table = sweep["table"]
    assert table["weight_bits"] == [2, 4] and table["activation_bits"] == [3, 4]
    for i, wb in enumerate(table["weight_bits"]):
        for j, ab in enumerate(table["activation_bits"]):
            run = next(r for r in runs if (r["weight_bits"], r["activation_bits"]) == (wb, ab))
            assert table["quantized_accuracy"][i][j] == run["quantized_accuracy"]
            assert table["bundle_bytes"][i][j] == run["bundle_bytes"]
    best = sweep["best"]
    assert best["quantized_accuracy"] == max(r["quantized_accuracy"] for r in runs)
    # 2-bit weights make a smaller bundle than 4-bit ones.
    assert table["bundle_bytes"][0][0] < table["bundle_bytes"][1][0]


def test_best_respects_the_byte_budget() -> None:
    runs = [
        {"status": "succeeded", "quantized_accuracy": 0.9, "bundle_bytes": 900, "bundle_id": "a"},
        {"status": "succeeded", "quantized_accuracy": 0.8, "bundle_bytes": 500, "bundle_id": "b"},
        {"status": "succeeded", "quantized_accuracy": 0.8, "bundle_bytes": 400, "bundle_id": "c"},
        {"status": "failed"},
    ]
    assert _best(runs, None)["bundle_id"] == "a"
    assert _best(runs, 600)["bundle_id"] == "c"  # ties go to the smaller bundle
    assert _best(runs, 100) is None


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"weight_bits": [2, 2]}, "distinct"),
        ({"weight_bits": [9]}, "weight_bits"),
        ({"activation_bits": [1]}, "activation_bits"),
        ({"weight_bits": []}, "weight_bits"),
        ({"seed": 3}, "seeds"),
        ({"seeds": list(range(5)), "weight_bits": [1, 2, 3, 4, 5, 6, 7, 8]}, "at most 64"),
        ({"byte_budget": 0}, "byte_budget"),
        ({"learning_rate": 1}, "learning_rate"),
    ],
)
def test_bad_sweeps_are_422(tmp_path: Path, change: dict, needle: str) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        resp = client.post("/quantize-sweeps", json={**TINY_SWEEP, **change})
        assert resp.status_code == 422, resp.text
        assert needle in resp.json()["error"]["message"]
        assert client.get("/quantize-jobs").json()["total"] == 0


def test_the_sweep_schema_lists_what_the_route_takes(tmp_path: Path) -> None:
    """The OpenAPI body of POST /quantize-sweeps names exactly the sweep's fields: no `seed`
    (a sweep takes `seeds`), which the route refuses with a message saying so (issue 28,
    item 8)."""
    with TestClient(create_app(make_settings(tmp_path))) as client:
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        body = schema["QuantizeSweepCreate"]
        assert "seed" not in body["properties"] and "seeds" in body["properties"]
        assert set(body["properties"]) == set(QuantizeSweepCreate.model_fields)
        assert body["additionalProperties"] is False
        # a null knob means its default, the seeds' too, and the schema says so
        assert {"type": "null"} in body["properties"]["seeds"]["anyOf"]
        resp = client.post("/quantize-sweeps", json={**TINY_SWEEP, "seed": 3})
        assert resp.status_code == 422
        assert "`seeds` (a list), not `seed`" in resp.json()["error"]["message"]


def test_unknown_sweep_or_dataset(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        assert client.get("/quantize-sweeps/nope").status_code == 404
        assert client.post("/quantize-sweeps/nope/cancel").status_code == 404
        resp = client.post("/quantize-sweeps", json={**TINY_SWEEP, "dataset": "nosuch"})
        assert resp.status_code == 422 and "available" in resp.json()["error"]["message"]


def test_cancel_stops_the_sweep(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, REAL_PIPELINE)
    with TestClient(create_app(settings)) as client:
        sweep = client.post("/quantize-sweeps", json=TINY_SWEEP).json()
        lead = next(r for r in sweep["runs"] if r["role"] == "lead")
        assert [r["status"] for r in sweep["runs"]].count("waiting") == 3
        resp = client.post(f"/quantize-sweeps/{sweep['id']}/cancel")
        assert resp.status_code == 202
        wait_job(client, lead["job_id"], timeout=30)
        done = wait_sweep(client, sweep["id"], timeout=30)
        assert done["status"] == "cancelled"
        assert {r["status"] for r in done["runs"] if r["role"] == "child"} == {"skipped"}
        assert client.get("/quantize-jobs").json()["total"] == 1


def test_a_sweep_an_older_server_stored_still_reads_and_advances(tmp_path: Path) -> None:
    """Sweeps stored before the request was kept as its body (knobs apart) still summarise,
    and their cells still get the knobs."""
    db = tmp_path / "siq.db"
    jobs = JobStore(db)
    jobs.init_schema()
    sweeps = SweepStore(db, jobs, tmp_path / "checkpoints")
    sweeps.init_schema()
    old = {
        "dataset": "digits",
        "weight_bits": [2, 4],
        "activation_bits": [4],
        "seeds": [1],
        "byte_budget": None,
        "knobs": {"epochs": 3.0, "kmeans": "lloyd"},
    }
    lead_params = JobParams(dataset="digits", weight_bits=2, activation_bits=4, seed=1)
    lead, _ = jobs.create(JobSpec(params=lead_params, role=SweepLead(sweep_id="s1")))
    with connect(db) as conn:
        conn.execute(
            "INSERT INTO sweeps (id, created, request) VALUES ('s1', ?, ?)",
            (utcnow(), json.dumps(old)),
        )
        conn.execute(
            "INSERT INTO sweep_runs VALUES ('s1', 1, 2, 4, 'lead', ?), ('s1', 1, 4, 4, 'child', NULL)",
            (lead.id,),
        )
    summary = sweeps.summary("s1")
    assert summary["config"] == {"epochs": 3.0, "kmeans": "lloyd"}
    assert summary["weight_bits"] == [2, 4] and summary["byte_budget"] is None
    assert [r["status"] for r in summary["runs"]] == ["queued", "waiting"]
    write_checkpoint(tmp_path / "checkpoints", lead.id, b"float model")
    assert sweeps.advance() == 1
    cell = next(r for r in sweeps.summary("s1")["runs"] if r["role"] == "child")
    spec = jobs.get(cell["job_id"]).spec
    assert spec.role == SweepCell(sweep_id="s1", lead_job=lead.id)
    assert spec.params == JobParams(
        dataset="digits", weight_bits=4, activation_bits=4, seed=1, epochs=3.0, kmeans="lloyd"
    )
