"""The start-up scan of the bundle directory: it publishes only bundles of succeeded (or
unknown) jobs that pass the publishing rule, and removes the partial `.tmp-*` files a killed
writer left."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.service.app import create_app
from server.service.bundles import BundleStore
from server.service.jobs import JobStore
from server.service.publishing import PublishRule
from server.service.verdicts import interrupted
from shared.bundle import TEMP_PREFIX, encode_bundle, write_bundle_atomic
from shared.errors import NotFoundError
from tests.factories import make_random_network
from tests.server.api_helpers import job_result, make_settings, plain_job

CONFIG = {"dataset": "digits", "weight_bits": 4, "activation_bits": 4, "seed": 0}
RULE = PublishRule()


def _bundle_file(
    directory: Path,
    seed: int,
    job_id: str | None,
    accuracy: float | None = None,
    created: str | None = None,
) -> Path:
    manifest, tensors = make_random_network(seed, weight_bits=4, activation_bits=4)
    manifest["provenance"] = {"dataset": "digits", "job_id": job_id, "created": created}
    if accuracy is not None:
        manifest["metrics"] = {"quantized_accuracy": accuracy}
    return write_bundle_atomic(directory, encode_bundle(manifest, tensors))


@pytest.fixture
def stores(tmp_path: Path) -> tuple[JobStore, BundleStore]:
    jobs = JobStore(tmp_path / "siq.db")
    jobs.init_schema()
    bundles = BundleStore(tmp_path / "siq.db", tmp_path / "bundles")
    bundles.init_schema()
    return jobs, bundles


def test_scan_skips_the_bundle_of_an_interrupted_job(stores: tuple[JobStore, BundleStore]) -> None:
    jobs, bundles = stores
    job, _ = jobs.create(plain_job(CONFIG))
    jobs.claim_next()
    # killed after the rename, before the verdict: the restart marks the job interrupted
    lost = _bundle_file(bundles.bundle_dir, 1, job.id)
    jobs.interrupt_running(interrupted())
    assert bundles.scan(RULE) == 0
    with pytest.raises(NotFoundError):
        bundles.latest("digits")
    with pytest.raises(NotFoundError):
        bundles.get(lost.stem)


def test_scan_registers_succeeded_and_jobless_bundles(stores: tuple[JobStore, BundleStore]) -> None:
    jobs, bundles = stores
    job, _ = jobs.create(plain_job(CONFIG))
    claimed = jobs.claim_next()
    assert claimed is not None
    done = _bundle_file(bundles.bundle_dir, 2, job.id)
    jobs.finish(job.id, claimed.attempt, "succeeded", result=job_result(done.stem))
    cli = _bundle_file(bundles.bundle_dir, 3, None)  # `python -m server quantize --out`
    assert bundles.scan(RULE) == 2
    assert {r.id for r in bundles.list()} == {done.stem, cli.stem}


def test_scan_removes_partial_temp_files(stores: tuple[JobStore, BundleStore]) -> None:
    _, bundles = stores
    bundles.bundle_dir.mkdir(parents=True, exist_ok=True)
    empty = bundles.bundle_dir / f"{TEMP_PREFIX}abc.siq"
    empty.write_bytes(b"")
    partial = bundles.bundle_dir / f"{TEMP_PREFIX}def.siq"
    partial.write_bytes(b"\x00" * 100)
    assert bundles.scan(RULE) == 0
    assert not empty.exists() and not partial.exists()


def test_a_file_found_at_start_below_chance_is_not_published(tmp_path: Path) -> None:
    """Issue 28 item 6: a file put into bundles/ of a stopped server does not become its data
    set's latest at start when the publishing rule refuses it; it stays downloadable by id."""
    settings = make_settings(tmp_path)
    poor = _bundle_file(settings.bundle_dir, 4, None, accuracy=0.08)  # 10 classes: chance 0.1
    with TestClient(create_app(settings)) as client:
        assert client.get("/bundles/latest", params={"dataset": "digits"}).status_code == 404
        assert client.get("/bundles").json()["items"] == []
        assert client.get(f"/bundles/{poor.stem}").status_code == 200


def test_files_found_at_start_are_judged_oldest_first(
    stores: tuple[JobStore, BundleStore],
) -> None:
    _, bundles = stores
    good = _bundle_file(bundles.bundle_dir, 5, None, accuracy=0.95, created="2026-01-01T00:00:00Z")
    worse = _bundle_file(bundles.bundle_dir, 6, None, accuracy=0.6, created="2026-02-01T00:00:00Z")
    better = _bundle_file(
        bundles.bundle_dir, 7, None, accuracy=0.96, created="2026-03-01T00:00:00Z"
    )
    assert bundles.scan(RULE) == 3
    assert [r.id for r in bundles.list()] == [better.stem, good.stem]  # newest first
    assert bundles.get(worse.stem).quantized_accuracy == 0.6  # kept, by id
    assert bundles.latest("digits").id == better.stem
