"""The compression knobs over HTTP: accepted as job fields, bad values a 422 naming them."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.service.app import create_app
from tests.server.api_helpers import TINY_JOB, make_settings

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"size_budget_bytes": 100}, "size_budget_bytes"),
        ({"size_budget_bytes": "20k"}, "size_budget_bytes"),
        ({"bits_per_layer": {"fc1": 9}}, "bits_per_layer"),
        ({"bits_per_layer": [2, 3]}, "bits_per_layer"),
        ({"sparsity_per_layer": {"fc1": 1.0}}, "sparsity_per_layer"),
        ({"sparsity": -0.1}, "sparsity"),
    ],
)
def test_bad_compression_fields_are_422(tmp_path: Path, extra: dict, field: str) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        resp = client.post("/quantize-jobs", json={**TINY_JOB, **extra})
        assert resp.status_code == 422, resp.text
        error = resp.json()["error"]
        assert error["field"].split(".")[0] == field
        assert client.get("/quantize-jobs").json()["total"] == 0


def test_compression_fields_are_stored_with_the_job(tmp_path: Path) -> None:
    body = {**TINY_JOB, "size_budget_bytes": 20_000, "bits_per_layer": {"conv1": 4}}
    with TestClient(create_app(make_settings(tmp_path))) as client:
        resp = client.post("/quantize-jobs", json=body)
        assert resp.status_code == 202, resp.text
        assert resp.json()["config"] == body
