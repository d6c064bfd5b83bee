"""JobStore without HTTP: idempotency, claiming, cancellation, conditional finishing, restarts."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from server.data import check_dataset
from server.job_spec import SweepCell, SweepLead
from server.service.jobs import JobStore
from server.service.verdicts import interrupted, job_error
from shared.api import IterationMetrics, Progress
from shared.errors import ConflictError, NotFoundError, UnknownDatasetError
from tests.server.api_helpers import job_result, plain_job

CONFIG = {"dataset": "digits", "weight_bits": 4, "activation_bits": 4}


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    s = JobStore(tmp_path / "siq.db")
    s.init_schema()
    return s


def test_create_get_and_page_newest_first(store: JobStore) -> None:
    ids = [store.create(plain_job({**CONFIG, "seed": i}))[0].id for i in range(5)]
    assert store.get(ids[0]).status == "queued"
    page, total = store.page(limit=2, offset=0)
    assert total == 5
    assert [j.id for j in page] == [ids[4], ids[3]]
    page, _ = store.page(limit=10, offset=4)
    assert [j.id for j in page] == [ids[0]]
    with pytest.raises(NotFoundError):
        store.get("nope")


def test_idempotency_key_returns_same_job_and_rejects_other_params(store: JobStore) -> None:
    first, created = store.create(plain_job(CONFIG), "key-1")
    again, created_again = store.create(plain_job(dict(CONFIG)), "key-1")
    assert created and not created_again
    assert again.id == first.id
    with pytest.raises(ConflictError, match="different parameters"):
        store.create(plain_job({**CONFIG, "weight_bits": 2}), "key-1")
    other, created_other = store.create(plain_job(CONFIG), "key-2")
    assert created_other and other.id != first.id


def test_claim_runs_oldest_first_and_finish_needs_current_attempt(store: JobStore) -> None:
    a, _ = store.create(plain_job(CONFIG))
    b, _ = store.create(plain_job(CONFIG))
    claimed = store.claim_next()
    assert claimed is not None and claimed.id == a.id and claimed.status == "running"
    assert not store.finish(a.id, claimed.attempt + 1, "succeeded", result=job_result())
    assert store.finish(a.id, claimed.attempt, "succeeded", result=job_result())
    assert store.get(a.id).status == "succeeded"
    # a terminal job is never finished twice
    assert not store.finish(a.id, None, "failed", error=job_error("x", "y"))
    nxt = store.claim_next()
    assert nxt is not None and nxt.id == b.id
    assert store.claim_next() is None


def test_cancel_queued_now_running_on_request_finished_conflict(store: JobStore) -> None:
    queued, _ = store.create(plain_job(CONFIG))
    running, _ = store.create(plain_job(CONFIG))
    store.cancel(queued.id)  # still queued: the oldest
    assert store.get(queued.id).status == "cancelled"
    claimed = store.claim_next()
    assert claimed is not None and claimed.id == running.id
    job = store.cancel(running.id)
    assert job.status == "running" and job.cancel_requested
    assert store.running_with_cancel_request() == {running.id}
    assert store.cancel_requested(running.id)
    store.finish(running.id, claimed.attempt, "cancelled")
    with pytest.raises(ConflictError, match="already cancelled"):
        store.cancel(running.id)


def test_progress_and_iterations_are_recorded(store: JobStore) -> None:
    job, _ = store.create(plain_job(CONFIG))
    claimed = store.claim_next()
    assert claimed is not None
    it = IterationMetrics(iteration=1, accuracy_after_kmeans=0.5)
    store.set_progress(job.id, claimed.attempt, Progress(stage="training", fraction=0.5), it)
    store.set_progress(job.id, claimed.attempt, Progress(stage="quantizing", fraction=0.6))
    got = store.get(job.id)
    assert got.progress == Progress(stage="quantizing", fraction=0.6)
    assert got.iterations == [it]


def test_interrupt_running_fails_only_running_jobs(store: JobStore) -> None:
    a, _ = store.create(plain_job(CONFIG))
    b, _ = store.create(plain_job(CONFIG))
    store.claim_next()
    assert store.interrupt_running(interrupted()) == [a.id]
    failed = store.get(a.id)
    assert failed.status == "failed"
    assert failed.error == interrupted()
    assert store.get(b.id).status == "queued"
    assert store.counts_by_status() == {"failed": 1, "queued": 1}


def test_check_dataset_names_the_available_ones(tmp_path: Path) -> None:
    check_dataset("digits", tmp_path)
    check_dataset("mnist", tmp_path)  # built in; a missing copy fails in the worker instead
    with pytest.raises(UnknownDatasetError, match="available: digits, mnist"):
        check_dataset("imagenet", tmp_path)


def test_progress_is_throttled_but_the_final_event_always_lands(store: JobStore) -> None:
    from server.service.job_worker import _Reporter

    job, _ = store.create(plain_job(CONFIG))
    claimed = store.claim_next()
    assert claimed is not None
    reporter = _Reporter(store, job.id, claimed.attempt)
    reporter.progress({"stage": "packaging", "fraction": 0.97, "message": "writing"})
    reporter.progress({"stage": "packaging", "fraction": 0.98, "message": "still writing"})
    throttled = Progress(stage="packaging", fraction=0.97, message="writing")
    assert store.get(job.id).progress == throttled  # the same stage, too soon
    reporter.progress({"stage": "packaging", "fraction": 1.0, "message": "done"})
    assert store.get(job.id).progress == Progress(stage="packaging", fraction=1.0, message="done")


# The jobs table and rows as the store wrote them before a job's role had a column (a sweep
# cell's role rode in its config under "sweep").
OLD_SCHEMA = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    request_hash TEXT,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT,
    progress TEXT,
    iterations TEXT NOT NULL DEFAULT '[]',
    result TEXT,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_status ON jobs (status, seq);
"""
OLD_RESULT = {
    "float_accuracy": 0.95,
    "quantized_accuracy": 0.94,
    "bundle_id": "ab" * 32,
    "bundle_path": "/state/bundles/" + "ab" * 32 + ".siq",
    "bundle_bytes": 5000,
    "float_bytes": 40000,
    "iterations": [{"iteration": 1, "accuracy_after_kmeans": 0.9, "seconds": 1.5}],
    "converged": True,
    "seconds": 12.5,
    "published": True,
    "simulated_accuracy": 0.94,
}


def _old_database(path: Path) -> None:
    def row(job_id: str, status: str, config: dict, key: str | None = None, **cols: object):
        text = json.dumps(config, sort_keys=True)
        values = {
            "id": job_id,
            "status": status,
            "config": text,
            "idempotency_key": key,
            "request_hash": hashlib.sha256(text.encode()).hexdigest(),
            "created": "2026-12-01T10:00:00.000+00:00",
            **cols,
        }
        names = ", ".join(values)
        conn.execute(
            f"INSERT INTO jobs ({names}) VALUES ({', '.join('?' * len(values))})",
            [json.dumps(v) if isinstance(v, dict | list) else v for v in values.values()],
        )

    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    lead = {"id": "s1", "role": "lead"}
    child = {"id": "s1", "role": "child", "float_job": "lead1"}
    row(
        "plain1",
        "succeeded",
        {**CONFIG, "epochs": 3.0},
        "client-key",
        started="2026-12-01T10:00:01.000+00:00",
        finished="2026-12-01T10:00:13.500+00:00",
        progress={"stage": "packaging", "fraction": 1.0, "message": "done"},
        iterations=OLD_RESULT["iterations"],
        result=OLD_RESULT,
        attempt=1,
    )
    row("failed1", "failed", CONFIG, error={"code": "interrupted", "message": "gone"})
    wide = {f"fc{i}": 2 for i in range(40)}  # more layers than today's bound allows
    row("wide1", "failed", {**CONFIG, "bits_per_layer": wide}, error={"code": "x", "message": "y"})
    row("lead1", "running", {**CONFIG, "seed": 1, "sweep": lead}, "sweep:s1:1:4:4", attempt=1)
    row(
        "cell1", "queued", {**CONFIG, "seed": 1, "weight_bits": 2, "sweep": child}, "sweep:s1:1:2:4"
    )
    conn.commit()
    conn.close()


def test_a_database_the_old_store_wrote_still_reads(tmp_path: Path) -> None:
    from server.service.api.jobs import to_public

    _old_database(tmp_path / "siq.db")
    store = JobStore(tmp_path / "siq.db")
    store.init_schema()
    store.init_schema()  # a second start finds it migrated
    plain = store.get("plain1")
    assert plain.spec == plain_job({**CONFIG, "epochs": 3})
    assert plain.result is not None and plain.result.quantized_accuracy == 0.94
    assert plain.seconds() == 12.5
    assert plain.iterations[0].accuracy_after_kmeans == 0.9
    public = to_public(plain).model_dump(mode="json")
    assert public["config"] == {**CONFIG, "epochs": 3.0} and public["role"]["kind"] == "plain"
    assert "bundle_path" not in public["result"] and "iterations" not in public["result"]
    assert public["result"]["simulated_accuracy"] == 0.94
    assert store.get("failed1").error == job_error("interrupted", "gone")
    wide = store.get("wide1")  # read as stored, though the bound refuses it now
    assert wide.spec.params.bits_per_layer == {f"fc{i}": 2 for i in range(40)}
    assert "bits_per_layer" in to_public(wide).config
    # the sweep's roles moved out of the configs into typed roles
    assert store.get("lead1").spec.role == SweepLead(sweep_id="s1")
    cell = store.get("cell1").spec
    assert cell.role == SweepCell(sweep_id="s1", lead_job="lead1")
    assert "sweep" not in cell.params.model_fields_set
    # Idempotency-Keys still match: a client's retry, and a sweep re-queuing its cell
    assert store.create(plain_job({**CONFIG, "epochs": 3}), "client-key") == (plain, False)
    again, created = store.create(cell, "sweep:s1:1:2:4")
    assert again.id == "cell1" and not created
    # and the rest of the store works on it
    assert store.counts_by_status() == {"succeeded": 1, "failed": 2, "running": 1, "queued": 1}
    claimed = store.claim_next()
    assert claimed is not None and claimed.id == "cell1"
