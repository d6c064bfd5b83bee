"""/bundles through HTTP: list, download (SHA-256 = id, ETag/304, signature), latest per data
set, manifest, 404s, and registration of bundle files found at start."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.service.app import create_app
from shared.bundle import write_bundle_atomic
from tests.factories import make_random_bundle
from tests.server.api_helpers import TINY_JOB, make_settings, wait_job

pytestmark = pytest.mark.slow


def _publish(client: TestClient, **params: object) -> dict:
    job_id = client.post("/quantize-jobs", json={**TINY_JOB, **params}).json()["id"]
    job = wait_job(client, job_id)
    assert job["status"] == "succeeded", job
    return job


def test_download_list_latest_manifest(tmp_path: Path) -> None:
    key = "k3y-for-tests"
    with TestClient(create_app(make_settings(tmp_path, bundle_hmac_key=key))) as client:
        assert client.get("/bundles").json() == {"items": []}
        latest = client.get("/bundles/latest", params={"dataset": "digits"})
        assert latest.status_code == 404 and "digits" in latest.json()["error"]["message"]

        first = _publish(client, seed=1)["result"]["bundle_id"]
        second = _publish(client, seed=2, weight_bits=2)["result"]["bundle_id"]
        assert first != second

        resp = client.get(f"/bundles/{first}")
        assert resp.status_code == 200
        assert hashlib.sha256(resp.content).hexdigest() == first
        assert resp.headers["X-SIQ-Bundle-SHA256"] == first
        assert resp.headers["ETag"] == f'"{first}"'
        expected = hmac.new(key.encode(), resp.content, hashlib.sha256).hexdigest()
        assert resp.headers["X-SIQ-Signature"] == expected

        cached = client.get(f"/bundles/{first}", headers={"If-None-Match": f'"{first}"'})
        assert cached.status_code == 304 and cached.content == b""

        items = client.get("/bundles").json()["items"]
        assert [b["id"] for b in items] == [second, first]
        assert items[0]["weight_bits"] == 2 and items[0]["dataset"] == "digits"
        assert items[0]["quantized_accuracy"] == 0.8 and items[0]["bytes"] > 0
        assert client.get("/bundles", params={"dataset": "mnist"}).json() == {"items": []}

        latest = client.get("/bundles/latest", params={"dataset": "digits"})
        assert latest.status_code == 200
        assert latest.headers["X-SIQ-Bundle-Id"] == second
        assert hashlib.sha256(latest.content).hexdigest() == second
        assert client.get("/bundles/latest", params={"dataset": "mnist"}).status_code == 404

        manifest = client.get(f"/bundles/{second}/manifest").json()
        assert manifest["weight_bits"] == 2 and manifest["provenance"]["dataset"] == "digits"
        assert client.get("/bundles/latest/manifest?dataset=digits").json() == manifest


@pytest.mark.parametrize("bad_id", ["0" * 64, "not-an-id", "..%2F..%2Fsiq.db"])
def test_unknown_bundle_is_404_with_message(tmp_path: Path, bad_id: str) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        for path in (f"/bundles/{bad_id}", f"/bundles/{bad_id}/manifest"):
            resp = client.get(path)
            assert resp.status_code == 404, path
            assert resp.json()["error"]["code"] == "not_found"
            assert "bundle" in resp.json()["error"]["message"]


def test_bundle_files_found_at_start_are_registered(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bundle_dir = settings.bundle_dir
    good = write_bundle_atomic(bundle_dir, make_random_bundle(seed=5))
    (bundle_dir / ("f" * 64 + ".siq")).write_bytes(b"not a bundle")  # skipped, not fatal
    with TestClient(create_app(settings)) as client:
        items = client.get("/bundles").json()["items"]
        assert [b["id"] for b in items] == [good.stem]
        assert items[0]["dataset"] == "random-lenet"
        assert client.get(f"/bundles/{good.stem}").content == good.read_bytes()


def test_an_id_with_a_final_newline_is_not_an_id(tmp_path: Path) -> None:
    """`^...$` let "<64 hex>\n" pass as an id (`$` matches before a final newline)."""
    settings = make_settings(tmp_path)
    good = write_bundle_atomic(settings.bundle_dir, make_random_bundle(seed=5))
    with TestClient(create_app(settings)) as client:
        resp = client.get(f"/bundles/{good.stem}%0A")
        assert resp.status_code == 404
        assert "64 hex digits" in resp.json()["error"]["message"]


def test_head_answers_gets_headers_after_the_token_check(tmp_path: Path) -> None:
    """HEAD is GET without the body: the read token is checked first (not a 405), and the
    headers are GET's (length, ETag, the bundle id)."""
    settings = make_settings(tmp_path, api_token="tok", protect_reads=True)
    good = write_bundle_atomic(settings.bundle_dir, make_random_bundle(seed=5))
    auth = {"Authorization": "Bearer tok"}
    with TestClient(create_app(settings)) as client:
        for path in (f"/bundles/{good.stem}", f"/bundles/{good.stem}/manifest", "/bundles"):
            assert client.head(path).status_code == 401, path
            head, get = client.head(path, headers=auth), client.get(path, headers=auth)
            assert head.status_code == 200 and head.content == b"", path
            assert head.headers["content-length"] == get.headers["content-length"], path
        head = client.head(f"/bundles/{good.stem}", headers=auth)
        assert head.headers["ETag"] == f'"{good.stem}"'
        assert client.head("/bundles/" + "0" * 64, headers=auth).status_code == 404
