"""Quantisation jobs in SQLite: the one record both the API process and the worker processes
read and write (WAL mode, short transactions, a fresh connection per operation).

States: queued -> running -> succeeded | failed | cancelled. A worker only finishes a job it
still owns: every claim bumps `attempt`, and terminal writes are conditional on it, so a
straggler process can never overwrite the verdict of a restarted server.

A row holds the job's `JobSpec` (server/job_spec.py) in two columns: `config`, the parameters
the caller set (JSON), and `role`, the role as JSON (NULL for a plain job). `JobRecord` reads a
row back as typed models. A database written before roles had a column kept a sweep cell's
role inside its config (`"sweep": {...}`); `init_schema` moves it into `role` (schema version 1).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from server.job_spec import JobRole, JobSpec, PlainJob, SweepCell, SweepLead
from server.params import JobParams
from server.progress import ProgressEvent
from shared.api import ErrorInfo, IterationMetrics, JobResult, JobStatus, Progress
from shared.errors import ConflictError, NotFoundError, QueueFullError

__all__ = [
    "JobStore",
    "JobRecord",
    "progress_of",
    "connect",
    "utcnow",
]

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1  # 1: the `role` column


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@contextmanager
def connect(db_path: Path, *, write: bool = True) -> Iterator[sqlite3.Connection]:
    """One short-lived connection in one transaction; commits on success, rolls back on
    error. Writers take the write lock up front (no upgrade deadlocks); readers never wait
    for a writer (WAL)."""
    conn = sqlite3.connect(db_path, timeout=15.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA busy_timeout = 15000")
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    role TEXT,
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
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
"""


class JobRecord(BaseModel):
    """One job as the store holds it."""

    model_config = ConfigDict(frozen=True)

    id: str
    status: JobStatus
    spec: JobSpec
    created: datetime
    started: datetime | None = None
    finished: datetime | None = None
    progress: Progress | None = None
    iterations: list[IterationMetrics] = Field(default_factory=list)
    result: JobResult | None = None
    error: ErrorInfo | None = None
    cancel_requested: bool = False
    attempt: int = 0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRecord:
        def load(name: str) -> Any:
            return json.loads(row[name]) if row[name] is not None else None

        return cls(
            id=row["id"],
            status=row["status"],
            spec=JobSpec(params=_stored_params(row["config"]), role=_role(row["role"])),
            created=row["created"],
            started=row["started"],
            finished=row["finished"],
            progress=load("progress"),
            iterations=load("iterations") or [],
            result=load("result"),
            error=load("error"),
            cancel_requested=bool(row["cancel_requested"]),
            attempt=row["attempt"],
        )

    def seconds(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return (self.finished - self.started).total_seconds()


def _stored_params(text: str) -> JobParams:
    """A row's parameters. One that today's bounds refuse (written before they were
    tightened) still reads, unvalidated: the record shows what ran; running it again fails
    with the bound's message."""
    try:
        return JobParams.model_validate_json(text)
    except ValidationError as exc:
        data = json.loads(text)
        log.warning("a stored job config no longer validates (%s); read as stored", exc)
        return JobParams.model_construct(_fields_set=set(data), **data)


_ROLE: TypeAdapter[JobRole] = TypeAdapter(JobRole)


def _role(text: str | None) -> JobRole:
    return PlainJob() if text is None else _ROLE.validate_json(text)


def _config_text(spec: JobSpec) -> str:
    """The parameters the caller set, as stored (and hashed for Idempotency-Key)."""
    return json.dumps(spec.params.model_dump(exclude_unset=True), sort_keys=True)


def _role_text(role: JobRole) -> str | None:
    return None if isinstance(role, PlainJob) else role.model_dump_json()


def _request_hash(config_text: str, role_text: str | None) -> str:
    """What an Idempotency-Key is bound to (for a plain job: its parameters alone, as before
    roles had a column, so a retry across the upgrade still matches)."""
    text = config_text if role_text is None else f"{config_text}\0{role_text}"
    return hashlib.sha256(text.encode()).hexdigest()


def _legacy_role(sweep: Any) -> str:
    """A role kept inside the config by the old store, as a `role` column's JSON."""
    if sweep.get("role") == "child":
        role: JobRole = SweepCell(sweep_id=str(sweep["id"]), lead_job=str(sweep["float_job"]))
    else:
        role = SweepLead(sweep_id=str(sweep["id"]))
    return role.model_dump_json()


def progress_of(event: ProgressEvent) -> tuple[Progress, IterationMetrics | None]:
    """A pipeline's progress event as the job's progress and, when an SIQ iteration ended,
    that iteration (what `JobStore.set_progress` records)."""
    progress = Progress(
        stage=str(event.get("stage") or "running"),
        fraction=min(1.0, max(0.0, float(event.get("fraction") or 0.0))),
        message=str(event.get("message") or ""),
    )
    iteration = event.get("iteration")
    return progress, None if iteration is None else IterationMetrics.model_validate(iteration)


def _plain(value: Any) -> Any:
    """numpy scalars / arrays and paths as JSON values (the pipeline reports numpy numbers)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _dumps(value: BaseModel | list[Any] | None) -> str | None:
    if isinstance(value, BaseModel):
        return json.dumps(value.model_dump(), default=_plain, sort_keys=True)
    return None if value is None else json.dumps(value, default=_plain, sort_keys=True)


class JobStore:
    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)

    def init_schema(self) -> None:
        conn = sqlite3.connect(self.db_path, timeout=15.0)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(_SCHEMA)
        finally:
            conn.close()
        self._migrate()

    def _migrate(self) -> None:
        """Bring a database an older server wrote up to SCHEMA_VERSION."""
        with connect(self.db_path) as conn:
            if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return
            columns = {r["name"] for r in conn.execute("PRAGMA table_info(jobs)")}
            if "role" not in columns:
                conn.execute("ALTER TABLE jobs ADD COLUMN role TEXT")
            rows = conn.execute(
                "SELECT id, config FROM jobs WHERE config LIKE '%\"sweep\"%'"
            ).fetchall()
            for job_id, text in rows:
                config = json.loads(text)
                sweep = config.pop("sweep", None)
                if not isinstance(sweep, dict):
                    continue
                config_text, role_text = json.dumps(config, sort_keys=True), _legacy_role(sweep)
                conn.execute(
                    "UPDATE jobs SET config = ?, role = ?, request_hash = ? WHERE id = ?",
                    (config_text, role_text, _request_hash(config_text, role_text), job_id),
                )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # ------------------------------------------------------------ API side

    def create(
        self,
        spec: JobSpec,
        idempotency_key: str | None = None,
        max_queued: int | None = None,
    ) -> tuple[JobRecord, bool]:
        """A new queued job, or (with a known idempotency key) the job it made before.
        Returns (job, created). QueueFullError when `max_queued` jobs are queued already."""
        config_text, role_text = _config_text(spec), _role_text(spec.role)
        request_hash = _request_hash(config_text, role_text)
        with connect(self.db_path) as conn:
            if idempotency_key is not None:
                row = conn.execute(
                    "SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,)
                ).fetchone()
                if row is not None:
                    if row["request_hash"] != request_hash:
                        # no job id here: the key may be another caller's
                        raise ConflictError(
                            f"Idempotency-Key {idempotency_key!r} was already used with "
                            "different parameters; use a new key"
                        )
                    return JobRecord.from_row(row), False
            if max_queued is not None:
                queued = conn.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'")
                if queued.fetchone()[0] >= max_queued:
                    raise QueueFullError(
                        f"{max_queued} jobs are queued already (SIQ_MAX_QUEUED_JOBS); "
                        "submit again once some have run",
                        retry_after=60,
                    )
            job_id = uuid.uuid4().hex
            conn.execute(
                "INSERT INTO jobs (id, status, config, role, idempotency_key, request_hash,"
                " created) VALUES (?, 'queued', ?, ?, ?, ?, ?)",
                (job_id, config_text, role_text, idempotency_key, request_hash, utcnow()),
            )
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return JobRecord.from_row(row), True

    def get(self, job_id: str) -> JobRecord:
        with connect(self.db_path, write=False) as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no quantize job with id {job_id!r}")
        return JobRecord.from_row(row)

    def page(
        self, limit: int, offset: int, status: str | None = None
    ) -> tuple[list[JobRecord], int]:
        """A page of jobs, newest first, and the total count."""
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        with connect(self.db_path, write=False) as conn:
            total = conn.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
            rows = conn.execute(
                f"SELECT * FROM jobs {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [JobRecord.from_row(r) for r in rows], total

    def counts_by_status(self) -> dict[str, int]:
        with connect(self.db_path, write=False) as conn:
            rows = conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {r[0]: r[1] for r in rows}

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job at once; ask a running one to stop (the runner enforces it)."""
        with connect(self.db_path) as conn:
            row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no quantize job with id {job_id!r}")
            if row["status"] == "queued":
                conn.execute(
                    "UPDATE jobs SET status = 'cancelled', finished = ?, cancel_requested = 1"
                    " WHERE id = ?",
                    (utcnow(), job_id),
                )
            elif row["status"] == "running":
                conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            else:
                raise ConflictError(f"job {job_id} already {row['status']}; nothing to cancel")
        return self.get(job_id)

    # ------------------------------------------------------------ runner side

    def claim_next(self) -> JobRecord | None:
        """The oldest queued job, now marked running under a new attempt number."""
        with connect(self.db_path, write=False) as conn:  # cheap check first: the runner polls
            if (
                conn.execute("SELECT 1 FROM jobs WHERE status = 'queued' LIMIT 1").fetchone()
                is None
            ):
                return None
        with connect(self.db_path) as conn:
            row = conn.execute(
                "SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status = 'running', started = ?, attempt = attempt + 1,"
                " progress = ? WHERE id = ?",
                (utcnow(), _dumps(Progress(stage="starting", fraction=0.0)), row[0]),
            )
            claimed = conn.execute("SELECT * FROM jobs WHERE id = ?", (row[0],)).fetchone()
        return JobRecord.from_row(claimed)

    def active_datasets(self) -> set[str]:
        """The data sets queued and running jobs name (DELETE /datasets refuses those)."""
        with connect(self.db_path, write=False) as conn:
            rows = conn.execute(
                "SELECT config FROM jobs WHERE status IN ('queued', 'running')"
            ).fetchall()
        return {_stored_params(r[0]).dataset for r in rows}

    def active_networks(self) -> set[str]:
        """The networks queued and running jobs name (DELETE /networks refuses those)."""
        with connect(self.db_path, write=False) as conn:
            rows = conn.execute(
                "SELECT config FROM jobs WHERE status IN ('queued', 'running')"
            ).fetchall()
        return {n for r in rows if (n := _stored_params(r[0]).network) is not None}

    def running_with_cancel_request(self) -> set[str]:
        with connect(self.db_path, write=False) as conn:
            rows = conn.execute(
                "SELECT id FROM jobs WHERE status = 'running' AND cancel_requested = 1"
            ).fetchall()
        return {r[0] for r in rows}

    def cancel_requested(self, job_id: str) -> bool:
        with connect(self.db_path, write=False) as conn:
            row = conn.execute(
                "SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return bool(row and row[0])

    def set_progress(
        self,
        job_id: str,
        attempt: int,
        progress: Progress,
        iteration: IterationMetrics | None = None,
    ) -> None:
        with connect(self.db_path) as conn:
            if iteration is not None:
                row = conn.execute("SELECT iterations FROM jobs WHERE id = ?", (job_id,)).fetchone()
                iterations = json.loads(row[0]) if row else []
                iterations.append(iteration.model_dump())
                conn.execute(
                    "UPDATE jobs SET iterations = ? WHERE id = ? AND status = 'running'"
                    " AND attempt = ?",
                    (_dumps(iterations), job_id, attempt),
                )
            conn.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running' AND attempt = ?",
                (_dumps(progress), job_id, attempt),
            )

    def finish(
        self,
        job_id: str,
        attempt: int | None,
        status: str,
        *,
        result: JobResult | None = None,
        iterations: list[IterationMetrics] | None = None,
        error: ErrorInfo | None = None,
        unless_cancelled: bool = False,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> bool:
        """Move a running job to a terminal state; False if it is no longer ours to finish.
        `attempt=None` finishes whichever attempt is running (the runner's verdict).
        `iterations`, when given, replace those the progress reports collected.
        `unless_cancelled`: not if a cancel was accepted meanwhile (checked in the same
        transaction, so a cancel is either honoured or answered 409 "already succeeded").
        `also(conn)` runs in the same transaction when the job was finished."""
        sets = "status = ?, finished = ?, result = ?, error = ?"
        args: list[Any] = [status, utcnow(), _dumps(result), _dumps(error)]
        if iterations is not None:
            sets += ", iterations = ?"
            args.append(json.dumps([it.model_dump() for it in iterations], default=_plain))
        query = f"UPDATE jobs SET {sets} WHERE id = ? AND status = 'running'"
        args.append(job_id)
        if attempt is not None:
            query += " AND attempt = ?"
            args.append(attempt)
        if unless_cancelled:
            query += " AND cancel_requested = 0"
        with connect(self.db_path) as conn:
            finished = conn.execute(query, args).rowcount == 1
            if finished and also is not None:
                also(conn)
            return finished

    def interrupt_running(self, error: ErrorInfo) -> list[str]:
        """Fail every job still marked running (its process is gone) with `error`."""
        with connect(self.db_path) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE status = 'running'")]
            conn.execute(
                "UPDATE jobs SET status = 'failed', finished = ?, error = ? WHERE status = 'running'",
                (utcnow(), _dumps(error)),
            )
        return ids

    def ping(self) -> None:
        """Raise unless the database reads back whole: `quick_check` walks every page (a few
        ms for a job table; a plain SELECT passes over corrupted pages it doesn't touch)."""
        with connect(self.db_path, write=False) as conn:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(problems))
