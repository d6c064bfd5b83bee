"""Published bundles: files `<id>.siq` in the bundle directory (written atomically by the
pipeline) plus one SQLite row each, so listing and "latest for a data set" need no file reads.

A bundle is registered when its job succeeds, and at server start every `*.siq` file in the
directory that has no row yet is registered too (bundles made with `python -m server quantize
--out <bundle dir>`). A file whose bytes do not hash to its name is skipped with a warning.
The scan never registers the bundle of a job this server knows but that did not succeed (a
job killed after its file was renamed into place but before it was recorded ends
`interrupted`); a file naming no job, or a job this database never had (copied from another
server), is registered, and published only if the publishing rule (publishing.py) lets it,
as a job's bundle is: files are judged oldest first (`provenance.created`), each against the
latest before it. The scan also removes the `.tmp-*` files a killed writer left.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.service.derived import DerivedFiles
from server.service.jobs import JobStore, connect, utcnow
from server.service.publishing import PublishRule, publish_decision
from shared.api import IterationMetrics, JobResult
from shared.bundle import (
    BUNDLE_SUFFIX,
    Bundle,
    bundle_id,
    decode_bundle,
    read_bundle_file,
    remove_temp_files,
)
from shared.errors import BundleError, NotFoundError

__all__ = ["BundleStore", "BundleRecord", "NotFoundError"]

log = logging.getLogger(__name__)
BUNDLE_ID = re.compile(r"[0-9a-f]{64}")  # fullmatch: `$` would let a final newline pass

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bundles (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    dataset TEXT NOT NULL,
    weight_bits INTEGER NOT NULL,
    activation_bits INTEGER NOT NULL,
    quantized_accuracy REAL,
    float_accuracy REAL,
    bytes INTEGER NOT NULL,
    created TEXT NOT NULL,
    job_id TEXT,
    published INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS bundles_by_dataset ON bundles (dataset, seq);
"""
_COLUMNS = "id, dataset, weight_bits, activation_bits, quantized_accuracy, float_accuracy, bytes, created, job_id"


@dataclass
class BundleRecord:
    id: str
    dataset: str
    weight_bits: int
    activation_bits: int
    quantized_accuracy: float | None
    float_accuracy: float | None
    bytes: int
    created: str
    job_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class BundleStore:
    def __init__(self, db_path: Path, bundle_dir: Path) -> None:
        self.db_path = Path(db_path)
        self.bundle_dir = Path(bundle_dir)
        self._verified: dict[str, tuple[int, int]] = {}  # id -> (size, mtime_ns) hashed OK
        self._derived = DerivedFiles(self.bundle_dir / "derived")

    def init_schema(self) -> None:
        with connect(self.db_path) as conn:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            columns = {r[1] for r in conn.execute("PRAGMA table_info(bundles)")}
            if "published" not in columns:  # a database from before the publishing rule
                conn.execute("ALTER TABLE bundles ADD COLUMN published INTEGER NOT NULL DEFAULT 1")

    def judge(self, path: Path, rule: PublishRule) -> dict[str, Any]:
        """Whether the bundle file at `path` may become its data set's latest (publishing.py)."""
        bundle = read_bundle_file(path)
        dataset = str((bundle.manifest.get("provenance") or {}).get("dataset") or "unknown")
        accuracy = (bundle.manifest.get("metrics") or {}).get("quantized_accuracy")
        try:
            current = self.latest(dataset).quantized_accuracy
        except NotFoundError:
            current = None
        return publish_decision(rule, accuracy, len(bundle.class_names), current)

    def path(self, bundle_id: str) -> Path:
        if not BUNDLE_ID.fullmatch(bundle_id):
            raise NotFoundError(f"no bundle with id {bundle_id!r} (ids are 64 hex digits)")
        return self.bundle_dir / f"{bundle_id}{BUNDLE_SUFFIX}"

    def register(
        self, path: Path, job_id: str | None = None, *, published: bool = True
    ) -> BundleRecord:
        """Record a bundle file (idempotent); BundleError if it is not a valid bundle.
        `published=False` keeps it downloadable by id but never `latest` nor listed."""
        row = self.row_for(path, job_id, published=published)
        with connect(self.db_path) as conn:
            self.insert(conn, row)
        return self.get(row[0])

    def row_for(self, path: Path, job_id: str | None = None, *, published: bool = True) -> tuple:
        """The bundles row of a valid bundle file (reads and checks it; BundleError)."""
        bundle = read_bundle_file(path)
        if path.name != f"{bundle.id}{BUNDLE_SUFFIX}":
            raise BundleError(f"{path}: its bytes hash to {bundle.id}, not to its file name")
        manifest = bundle.manifest
        metrics = manifest.get("metrics") or {}
        provenance = manifest.get("provenance") or {}
        created = provenance.get("created") or utcnow()
        return (
            bundle.id,
            str(provenance.get("dataset") or "unknown"),
            int(manifest["weight_bits"]),
            int(manifest["activation_bits"]),
            metrics.get("quantized_accuracy"),
            metrics.get("float_accuracy"),
            bundle.size,
            created,
            job_id or provenance.get("job_id"),
            int(published),
        )

    @staticmethod
    def insert(conn: sqlite3.Connection, row: tuple) -> None:
        """Insert a `row_for` row in the caller's transaction (a job's verdict and its bundle
        land together: no reader sees a succeeded job whose bundle is not there yet)."""
        conn.execute(
            f"INSERT OR IGNORE INTO bundles ({_COLUMNS}, published)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )

    def finish_succeeded(
        self,
        jobs: JobStore,
        job_id: str,
        attempt: int,
        result: JobResult,
        path: Path,
        rule: PublishRule,
        *,
        iterations: list[IterationMetrics] | None = None,
    ) -> bool:
        """Record a job's success and its bundle (published if `rule` lets it) in one
        transaction, unless a cancel was accepted meanwhile: then False and nothing recorded
        (the caller finishes the job cancelled). Both executors end a good job here."""
        result = result.model_copy(update=self.judge(path, rule))
        row = self.row_for(path, job_id, published=bool(result.published))
        return jobs.finish(
            job_id,
            attempt,
            "succeeded",
            result=result,
            iterations=iterations,
            unless_cancelled=True,
            also=lambda conn: self.insert(conn, row),
        )

    def scan(self, rule: PublishRule) -> int:
        """Register every bundle file in the directory that has no row yet (except those of
        jobs that did not succeed), published only where `rule` lets it; returns how many.
        Removes leftover `.tmp-*` files."""
        for leftover in [*remove_temp_files(self.bundle_dir), *self._derived.remove_temp_files()]:
            log.warning("removed %s, a partial bundle file a killed writer left", leftover)
        with connect(self.db_path, write=False) as conn:
            known = {r[0] for r in conn.execute("SELECT id FROM bundles")}
            rows = conn.execute("SELECT id, status, result FROM jobs").fetchall()
        jobs = {r[0]: r[1] for r in rows}
        # a job the publishing rule refused stays unpublished after a restart too
        refused = {r[0] for r in rows if r[2] and json.loads(r[2]).get("published") is False}
        found = []
        for path in self.bundle_dir.glob(f"*{BUNDLE_SUFFIX}"):
            if path.name.startswith(".") or path.stem in known:
                continue
            try:
                provenance = read_bundle_file(path).manifest.get("provenance") or {}
            except (BundleError, KeyError, TypeError, ValueError) as exc:
                log.warning("skipping bundle file %s: %s", path, exc)
                continue
            job_id = provenance.get("job_id")
            if job_id in jobs and jobs[job_id] != "succeeded":
                log.warning(
                    "not publishing %s: its job %s is %s, not succeeded", path, job_id, jobs[job_id]
                )
                continue
            found.append((str(provenance.get("created") or ""), path.name, path, job_id))
        added = 0
        for _, _, path, job_id in sorted(found):  # oldest first: each judged against the last
            try:
                published = job_id not in refused and self._scan_verdict(path, rule)
                self.register(path, published=published)
                added += 1
            except (BundleError, KeyError, TypeError, ValueError) as exc:
                log.warning("skipping bundle file %s: %s", path, exc)
        return added

    def _scan_verdict(self, path: Path, rule: PublishRule) -> bool:
        verdict = self.judge(path, rule)
        if not verdict["published"]:
            log.warning("found %s at start: %s", path, verdict["publish_note"])
        return bool(verdict["published"])

    def get(self, bundle_id: str) -> BundleRecord:
        self.path(bundle_id)  # validates the id's shape
        with connect(self.db_path, write=False) as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM bundles WHERE id = ?", (bundle_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no bundle with id {bundle_id}")
        return BundleRecord(*row)

    def latest(self, dataset: str | None) -> BundleRecord:
        """The newest published bundle (for `dataset`, when given)."""
        where, args = (
            ("WHERE published AND dataset = ?", (dataset,)) if dataset else ("WHERE published", ())
        )
        with connect(self.db_path, write=False) as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM bundles {where} ORDER BY seq DESC LIMIT 1", args
            ).fetchone()
        if row is None:
            scope = f"for data set {dataset!r}" if dataset else "at all"
            raise NotFoundError(f"no bundle {scope} yet; run a quantize job first")
        return BundleRecord(*row)

    def resolve(self, bundle_id: str, dataset: str | None) -> BundleRecord:
        """`latest` (optionally per data set) or an exact id."""
        return self.latest(dataset) if bundle_id == "latest" else self.get(bundle_id)

    def list(self, dataset: str | None = None) -> list[BundleRecord]:
        """Published bundles, newest first."""
        where, args = (
            ("WHERE published AND dataset = ?", (dataset,)) if dataset else ("WHERE published", ())
        )
        with connect(self.db_path, write=False) as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM bundles {where} ORDER BY seq DESC", args
            ).fetchall()
        return [BundleRecord(*r) for r in rows]

    def read(self, record: BundleRecord) -> bytes:
        """The bundle's bytes, checked against its id (a file edited or truncated on disk is
        never signed and served); BundleError (500 bad_bundle) when they no longer match.
        The check is cached per (size, mtime), so an unchanged file is hashed once."""
        path = self.path(record.id)
        try:
            stat = path.stat()
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(
                f"bundle {record.id} is recorded but its file is gone from the bundle directory"
            ) from None
        stamp = (stat.st_size, stat.st_mtime_ns)
        if self._verified.get(record.id) != stamp:
            if bundle_id(data) != record.id:
                self._verified.pop(record.id, None)
                raise BundleError(
                    f"bundle {record.id}'s file on the server no longer matches its id (it "
                    "was changed or damaged on disk), so it is not served; restore the file "
                    "or run the job again"
                )
            self._verified[record.id] = stamp
        return data

    def derived(self, record: BundleRecord, name: str, make: Callable[[Bundle], bytes]) -> bytes:
        """A file made from the bundle by `make` (C sources, ONNX, cost report), made once and
        kept beside the bundles in `derived/<id>/<name>` (server/service/derived.py)."""
        return self._derived.get(
            record.id, name, lambda: make(decode_bundle(self.read(record), expected_id=record.id))
        )

    def manifest(self, record: BundleRecord) -> dict[str, Any]:
        return read_bundle_file(self.path(record.id), expected_id=record.id).manifest
