"""The server's OpenAPI document says what this server takes (issue 28, schemathesis's
positive_data_acceptance): the data sets of a job or sweep body are an enum of those it has
at the time of the request, and the sweep's grid lists say their values are distinct."""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from server.service.app import create_app
from tests.samples import SAMPLE_DIR
from tests.server.api_helpers import make_settings
from tests.server.test_dataset_upload import ZIP, good_files, zip_of


def _dataset_enum(client: TestClient, body: str) -> list[str]:
    doc = client.get("/openapi.json").json()
    return doc["components"]["schemas"][body]["properties"]["dataset"]["enum"]


def test_the_document_lists_the_data_sets_there_are_at_each_request(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.data_dir.mkdir(parents=True)
    with TestClient(create_app(settings)) as client:
        for body in ("QuantizeJobCreate", "QuantizeSweepCreate"):
            assert _dataset_enum(client, body) == ["digits", "mnist"]
        shutil.copytree(SAMPLE_DIR / "office10", settings.data_dir / "office10")
        assert _dataset_enum(client, "QuantizeJobCreate") == ["digits", "mnist", "office10"]
        job = {"dataset": "office10", "weight_bits": 4.0, "activation_bits": 4}
        assert client.post("/quantize-jobs", json=job).status_code == 202
        shutil.rmtree(settings.data_dir / "office10")
        assert _dataset_enum(client, "QuantizeSweepCreate") == ["digits", "mnist"]
        job["dataset"] = "office10"
        assert client.post("/quantize-jobs", json=job).status_code == 422


def test_a_sweeps_grid_lists_are_declared_distinct(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        body = client.get("/openapi.json").json()["components"]["schemas"]["QuantizeSweepCreate"]
    for name in ("weight_bits", "activation_bits", "seeds"):
        prop = body["properties"][name]
        array = next((s for s in prop.get("anyOf", ()) if s.get("type") == "array"), prop)
        assert array.get("uniqueItems") is True, name


def test_an_uploaded_data_set_is_in_the_document_until_it_is_deleted(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.data_dir.mkdir(parents=True)
    with TestClient(create_app(settings)) as client:
        body = zip_of(good_files())
        upload = client.post("/datasets", params={"name": "mine"}, content=body, headers=ZIP)
        assert upload.status_code in (200, 201), upload.text
        assert _dataset_enum(client, "QuantizeJobCreate") == ["digits", "mine", "mnist"]
        assert client.delete("/datasets/mine").status_code in (200, 204)
        assert _dataset_enum(client, "QuantizeJobCreate") == ["digits", "mnist"]
