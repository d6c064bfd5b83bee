"""A bundle file whose bytes no longer match its id (edited or damaged on disk after it was
published) is never signed and served: 500 bad_bundle with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.service.app import create_app
from tests.server.api_helpers import TINY_JOB, make_settings, wait_job

pytestmark = pytest.mark.slow


def test_a_changed_bundle_file_is_not_served(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "succeed", bundle_hmac_key="k" * 32)
    with TestClient(create_app(settings)) as client:
        job_id = client.post("/quantize-jobs", json=TINY_JOB).json()["id"]
        bundle_id = wait_job(client, job_id)["result"]["bundle_id"]
        ok = client.get(f"/bundles/{bundle_id}")
        assert ok.status_code == 200 and "X-SIQ-Signature" in ok.headers
        path = settings.bundle_dir / f"{bundle_id}.siq"
        path.write_bytes(path.read_bytes()[:-1])  # damaged: one byte short
        for url in (f"/bundles/{bundle_id}", "/bundles/latest?dataset=digits"):
            bad = client.get(url)
            assert bad.status_code == 500, bad.text
            assert bad.json()["error"]["code"] == "bad_bundle"
            assert "no longer matches" in bad.json()["error"]["message"]
            assert "X-SIQ-Signature" not in bad.headers
