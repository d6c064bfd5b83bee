"""Bit-grid sweeps: every (seed, weight bits, activation bits) cell is an ordinary quantize
job; the float model trains once per seed (the roles: server/job_spec.py).

On creation each seed's first cell is queued as the seed's *lead*. The moment a lead has
written its float checkpoint, `advance()` queues the seed's other cells as children that
start from it, so they run in parallel on whatever the executor has (worker slots, Ray
nodes). `summary()` reads the children's jobs: the accuracy x bits table, sizes, and the
best bundle under an optional byte budget. Everything lives in SQLite beside the jobs, so a
restart loses nothing: `advance()` picks up where it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

from server.job_spec import JobRole, JobSpec, SweepCell, SweepLead
from server.params import QuantizeSweepCreate
from server.service.checkpoints import checkpoint_path
from server.service.jobs import JobRecord, JobStore, connect, utcnow
from shared.errors import ConflictError, NotFoundError

__all__ = ["SweepStore", "SweepCoordinator"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    created TEXT NOT NULL,
    request TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sweep_runs (
    sweep_id TEXT NOT NULL,
    seed INTEGER NOT NULL,
    weight_bits INTEGER NOT NULL,
    activation_bits INTEGER NOT NULL,
    role TEXT NOT NULL,
    job_id TEXT,
    PRIMARY KEY (sweep_id, seed, weight_bits, activation_bits)
);
"""
ACTIVE = {"queued", "running"}


class SweepStore:
    def __init__(self, db_path: Path, jobs: JobStore, checkpoint_dir: Path) -> None:
        self.db_path, self.jobs, self.checkpoint_dir = Path(db_path), jobs, checkpoint_dir

    def init_schema(self) -> None:
        with connect(self.db_path) as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

    # ------------------------------------------------------------ writes

    def create(self, request: QuantizeSweepCreate) -> str:
        """A sweep of `request`; queues one lead job per seed."""
        sweep_id = uuid.uuid4().hex
        cells = [
            (seed, wb, ab)
            for seed in request.seeds
            for wb in request.weight_bits
            for ab in request.activation_bits
        ]
        leads = {seed: (wb, ab) for seed, wb, ab in reversed(cells)}  # each seed's first cell
        with connect(self.db_path) as conn:
            conn.execute(
                "INSERT INTO sweeps (id, created, request) VALUES (?, ?, ?)",
                (sweep_id, utcnow(), request.model_dump_json(exclude_unset=True)),
            )
            conn.executemany(
                "INSERT INTO sweep_runs (sweep_id, seed, weight_bits, activation_bits, role)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (sweep_id, s, wb, ab, "lead" if leads[s] == (wb, ab) else "child")
                    for s, wb, ab in cells
                ],
            )
        for seed, (wb, ab) in leads.items():
            self._queue(sweep_id, request, seed, wb, ab, SweepLead(sweep_id=sweep_id))
        return sweep_id

    def _queue(
        self,
        sweep_id: str,
        request: QuantizeSweepCreate,
        seed: int,
        wb: int,
        ab: int,
        role: JobRole,
    ) -> None:
        spec = JobSpec(params=request.cell(seed, wb, ab), role=role)
        # The idempotency key makes a repeated advance() (two threads, a restart) harmless.
        job, _ = self.jobs.create(spec, f"sweep:{sweep_id}:{seed}:{wb}:{ab}")
        with connect(self.db_path) as conn:
            conn.execute(
                "UPDATE sweep_runs SET job_id = ? WHERE sweep_id = ? AND seed = ?"
                " AND weight_bits = ? AND activation_bits = ?",
                (job.id, sweep_id, seed, wb, ab),
            )

    def advance(self) -> int:
        """Queue the children of every lead whose float checkpoint exists; how many."""
        with connect(self.db_path, write=False) as conn:
            waiting = conn.execute(
                "SELECT r.sweep_id, r.seed, r.weight_bits, r.activation_bits, l.job_id, s.request"
                " FROM sweep_runs r JOIN sweep_runs l ON l.sweep_id = r.sweep_id"
                " AND l.seed = r.seed AND l.role = 'lead' JOIN sweeps s ON s.id = r.sweep_id"
                " WHERE r.job_id IS NULL AND l.job_id IS NOT NULL AND s.cancel_requested = 0"
            ).fetchall()
        queued = 0
        for sweep_id, seed, wb, ab, lead_job, request in waiting:
            if checkpoint_path(self.checkpoint_dir, lead_job).exists():
                role = SweepCell(sweep_id=sweep_id, lead_job=lead_job)
                self._queue(sweep_id, _request(request), seed, wb, ab, role)
                queued += 1
        return queued

    def cancel(self, sweep_id: str) -> None:
        """Stop queuing children and cancel every child job still queued or running."""
        self._sweep(sweep_id)  # NotFoundError for an unknown id
        with connect(self.db_path) as conn:
            conn.execute("UPDATE sweeps SET cancel_requested = 1 WHERE id = ?", (sweep_id,))
        for run in self._runs(sweep_id):
            if run["job_id"]:
                with contextlib.suppress(ConflictError):  # already finished
                    self.jobs.cancel(run["job_id"])

    # ------------------------------------------------------------ reads

    def _sweep(self, sweep_id: str) -> dict[str, Any]:
        with connect(self.db_path, write=False) as conn:
            row = conn.execute("SELECT * FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no quantize sweep with id {sweep_id!r}")
        return dict(row)

    def _runs(self, sweep_id: str) -> list[dict[str, Any]]:
        with connect(self.db_path, write=False) as conn:
            rows = conn.execute(
                "SELECT * FROM sweep_runs WHERE sweep_id = ?"
                " ORDER BY seed, weight_bits, activation_bits",
                (sweep_id,),
            ).fetchall()
        return [dict(r) for r in rows]

    def summary(self, sweep_id: str) -> dict[str, Any]:
        """Status, every run, the accuracy x bits table and the best bundle within budget."""
        sweep = self._sweep(sweep_id)
        request = _request(sweep["request"])
        runs = self._runs(sweep_id)
        jobs = {r["job_id"]: self.jobs.get(r["job_id"]) for r in runs if r["job_id"]}
        leads = {r["seed"]: jobs.get(r["job_id"]) for r in runs if r["role"] == "lead"}
        views = [
            _run_view(r, jobs.get(r["job_id"]), leads[r["seed"]], bool(sweep["cancel_requested"]))
            for r in runs
        ]
        return {
            "id": sweep_id,
            "status": _sweep_status([v["status"] for v in views], bool(sweep["cancel_requested"])),
            "created": sweep["created"],
            "dataset": request.dataset,
            "weight_bits": request.weight_bits,
            "activation_bits": request.activation_bits,
            "seeds": request.seeds,
            "byte_budget": request.byte_budget,
            "config": request.knobs(),
            "runs": views,
            "table": _table(request, views),
            "best": _best(views, request.byte_budget),
            "links": {
                "self": f"/quantize-sweeps/{sweep_id}",
                "cancel": f"/quantize-sweeps/{sweep_id}/cancel",
            },
        }


def _request(text: str) -> QuantizeSweepCreate:
    """A sweep's stored request: its body as sent (older servers stored the knobs apart, as
    `{dataset, weight_bits, activation_bits, seeds, byte_budget, knobs: {...}}`)."""
    data = json.loads(text)
    if isinstance(data.get("knobs"), dict):
        data = {**data.pop("knobs"), **data}
    return QuantizeSweepCreate.model_validate(data)


def _run_view(
    run: dict[str, Any], job: JobRecord | None, lead: JobRecord | None, cancelled: bool
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "seed": run["seed"],
        "weight_bits": run["weight_bits"],
        "activation_bits": run["activation_bits"],
        "role": run["role"],
        "job_id": run["job_id"],
    }
    if job is None:
        # Not queued yet: waiting for the lead's float model, or never (lead ended without one).
        lead_active = lead is not None and lead.status in ACTIVE
        view["status"] = "waiting" if lead_active and not cancelled else "skipped"
        return view
    view["status"] = job.status
    if job.result:
        for key in ("quantized_accuracy", "float_accuracy", "bundle_id", "bundle_bytes"):
            view[key] = getattr(job.result, key)
    if job.error:
        view["error"] = job.error.model_dump()
    return view


def _sweep_status(statuses: list[str], cancelled: bool) -> str:
    if any(s in ACTIVE or s == "waiting" for s in statuses):
        return "running"
    if cancelled:
        return "cancelled"
    return "succeeded" if all(s == "succeeded" for s in statuses) else "failed"


def _table(request: QuantizeSweepCreate, views: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows: weight bits; columns: activation bits; cells: the mean integer-engine test
    accuracy over the seeds that succeeded (null until one has), and the bundle size."""
    accuracy, sizes = [], []
    for wb in request.weight_bits:
        acc_row, size_row = [], []
        for ab in request.activation_bits:
            done = [
                v
                for v in views
                if v["weight_bits"] == wb
                and v["activation_bits"] == ab
                and v["status"] == "succeeded"
            ]
            acc_row.append(sum(v["quantized_accuracy"] for v in done) / len(done) if done else None)
            size_row.append(max(v["bundle_bytes"] for v in done) if done else None)
        accuracy.append(acc_row)
        sizes.append(size_row)
    return {
        "rows": "weight_bits",
        "columns": "activation_bits",
        "weight_bits": request.weight_bits,
        "activation_bits": request.activation_bits,
        "quantized_accuracy": accuracy,
        "bundle_bytes": sizes,
    }


def _best(views: list[dict[str, Any]], budget: int | None) -> dict[str, Any] | None:
    """The most accurate finished bundle that fits the budget (ties: the smaller one)."""
    fits = [
        v
        for v in views
        if v["status"] == "succeeded" and (budget is None or v["bundle_bytes"] <= budget)
    ]
    if not fits:
        return None
    best = max(fits, key=lambda v: (v["quantized_accuracy"], -v["bundle_bytes"]))
    return {**best, "links": {"bundle": f"/bundles/{best['bundle_id']}"}}


class SweepCoordinator:
    """A thread that queues sweep children as their float checkpoints appear."""

    def __init__(self, store: SweepStore, wake_runner: Any, interval_s: float) -> None:
        self.store, self.wake_runner, self.interval_s = store, wake_runner, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="siq-sweeps", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self.store.advance():
                    self.wake_runner()
            except Exception:  # noqa: BLE001 - keep coordinating after a bad tick (DB busy)
                log.exception("sweep coordinator tick failed")
