"""Published bundles: files `<id>.siq` in the bundle directory (written atomically by the
pipeline) plus one SQLite row each, so listing and "latest for a data set" need no file reads.

A bundle is registered when its job succeeds, and at server start every `*.siq` file in the
directory that has no row yet is registered too (bundles made with `python -m server quantize
--out <bundle dir>`). A file whose bytes do not hash to its name is skipped with a warning.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.service.jobs import connect, utcnow
from shared.bundle import BUNDLE_SUFFIX, read_bundle_file
from shared.errors import BundleError, NotFoundError

__all__ = ["BundleStore", "BundleRecord", "NotFoundError"]

log = logging.getLogger(__name__)
BUNDLE_ID = re.compile(r"^[0-9a-f]{64}$")

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
    job_id TEXT
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

    def init_schema(self) -> None:
        with connect(self.db_path) as conn:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)

    def path(self, bundle_id: str) -> Path:
        if not BUNDLE_ID.match(bundle_id):
            raise NotFoundError(f"no bundle with id {bundle_id!r} (ids are 64 hex digits)")
        return self.bundle_dir / f"{bundle_id}{BUNDLE_SUFFIX}"

    def register(self, path: Path, job_id: str | None = None) -> BundleRecord:
        """Record a bundle file (idempotent); BundleError if it is not a valid bundle."""
        bundle = read_bundle_file(path)
        if path.name != f"{bundle.id}{BUNDLE_SUFFIX}":
            raise BundleError(f"{path}: its bytes hash to {bundle.id}, not to its file name")
        manifest = bundle.manifest
        metrics = manifest.get("metrics") or {}
        provenance = manifest.get("provenance") or {}
        created = provenance.get("created") or utcnow()
        row = (
            bundle.id,
            str(provenance.get("dataset") or "unknown"),
            int(manifest["weight_bits"]),
            int(manifest["activation_bits"]),
            metrics.get("quantized_accuracy"),
            metrics.get("float_accuracy"),
            bundle.size,
            created,
            job_id or provenance.get("job_id"),
        )
        with connect(self.db_path) as conn:
            conn.execute(
                f"INSERT OR IGNORE INTO bundles ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        return self.get(bundle.id)

    def scan(self) -> int:
        """Register every bundle file in the directory that has no row yet; returns how many."""
        with connect(self.db_path, write=False) as conn:
            known = {r[0] for r in conn.execute("SELECT id FROM bundles")}
        added = 0
        for path in sorted(self.bundle_dir.glob(f"*{BUNDLE_SUFFIX}")):
            if path.name.startswith(".") or path.stem in known:
                continue
            try:
                self.register(path)
                added += 1
            except (BundleError, KeyError, TypeError, ValueError) as exc:
                log.warning("skipping bundle file %s: %s", path, exc)
        return added

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
        """The newest bundle (for `dataset`, when given)."""
        where, args = ("WHERE dataset = ?", (dataset,)) if dataset else ("", ())
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
        where, args = ("WHERE dataset = ?", (dataset,)) if dataset else ("", ())
        with connect(self.db_path, write=False) as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM bundles {where} ORDER BY seq DESC", args
            ).fetchall()
        return [BundleRecord(*r) for r in rows]

    def read(self, record: BundleRecord) -> bytes:
        try:
            return self.path(record.id).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(
                f"bundle {record.id} is recorded but its file is gone from the bundle directory"
            ) from None

    def manifest(self, record: BundleRecord) -> dict[str, Any]:
        return read_bundle_file(self.path(record.id), expected_id=record.id).manifest
