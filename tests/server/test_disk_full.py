"""A full disk (issue 28 item 9): reads keep working, because a read needs no space, and a
write answers 507 `insufficient_storage` naming the cause, not a 500.

SQLite removes a WAL database's `-wal` and `-shm` files when its last connection closes, and
a reader that must create them again cannot when the disk is full: the server holds one
connection open for its life. The last test fills a real 2 MiB tmpfs where one can be
mounted (root on Linux); the others stand in for the full disk with the errors it raises."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.service.app import create_app
from server.service.jobs import JobStore
from shared.bundle import write_bundle_atomic
from tests.factories import make_random_bundle
from tests.server.api_helpers import TINY_JOB, make_settings


def sqlite_full_error() -> sqlite3.OperationalError:
    """The error SQLite raises when a write finds no space (SQLITE_FULL), made by SQLite."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("PRAGMA max_page_count = 2")
    try:
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    except sqlite3.OperationalError as exc:
        assert exc.sqlite_errorcode == sqlite3.SQLITE_FULL
        return exc
    finally:
        conn.close()
    raise AssertionError("SQLite found room")


@pytest.mark.parametrize(
    "error",
    [sqlite_full_error(), OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))],
    ids=["sqlite_full", "enospc"],
)
def test_a_write_without_space_is_507_naming_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise error

    with TestClient(create_app(make_settings(tmp_path))) as client:
        monkeypatch.setattr(JobStore, "create", full)
        resp = client.post("/quantize-jobs", json=TINY_JOB)
        assert resp.status_code == 507, resp.text
        assert resp.json()["error"]["code"] == "insufficient_storage"
        assert "disk is full" in resp.json()["error"]["message"]
        assert str(error.args[-1]) in resp.json()["error"]["message"]
        assert client.get("/quantize-jobs").status_code == 200


def test_other_database_errors_stay_500(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with TestClient(create_app(make_settings(tmp_path)), raise_server_exceptions=False) as client:
        monkeypatch.setattr(JobStore, "create", broken)
        resp = client.post("/quantize-jobs", json=TINY_JOB)
        assert resp.status_code == 500 and resp.json()["error"]["code"] == "internal_error"


def test_the_databases_files_stay_while_the_server_runs(tmp_path: Path) -> None:
    """What a reader needs on a full disk: the -wal and -shm files exist between requests."""
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        assert client.get("/quantize-jobs").status_code == 200
        for suffix in ("-wal", "-shm"):
            assert Path(f"{settings.db_path}{suffix}").exists(), suffix


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "tiny"
    where.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_keeps_reads_and_refuses_writes_with_507(tiny_disk: Path) -> None:
    settings = make_settings(tiny_disk)
    app = create_app(settings)
    bid = write_bundle_atomic(settings.bundle_dir, make_random_bundle(seed=5)).stem
    with TestClient(app) as client:
        assert client.post("/quantize-jobs", json=TINY_JOB).status_code == 202
        filler = tiny_disk / "filler"
        with pytest.raises(OSError, match="No space"), filler.open("wb") as f:
            while True:
                f.write(bytes(4096))
                f.flush()
        try:
            for path in ("/quantize-jobs", "/bundles", f"/bundles/{bid}", f"/bundles/{bid}/c"):
                assert client.get(path).status_code == 200, path
            resp = client.post("/quantize-jobs", json={**TINY_JOB, "seed": 1})
            assert resp.status_code == 507, resp.text
            ready = client.get("/readyz")
            assert ready.status_code == 503 and "space" in ready.json()["checks"]["state_dir"]
        finally:
            filler.unlink()
        assert client.post("/quantize-jobs", json={**TINY_JOB, "seed": 2}).status_code == 202
