"""GET /bundles/{id}/c and /bundles/{id}/cost: the generated C sources as a .tar.gz and the
cost report, for a bundle file the server found at start; 404 for an unknown bundle."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from fastapi.testclient import TestClient

from server.service.app import create_app
from shared.bundle import decode_bundle, write_bundle_atomic
from shared.cgen import generate_bundle_c
from shared.network import cost_report
from tests.factories import make_random_bundle
from tests.server.api_helpers import make_settings


def test_c_sources_and_cost_of_a_bundle(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    data = make_random_bundle(seed=7, arch="photo")
    bid = write_bundle_atomic(settings.bundle_dir, data).stem
    with TestClient(create_app(settings)) as client:
        resp = client.get(f"/bundles/{bid}/c")
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"] == "application/gzip"
        with tarfile.open(fileobj=io.BytesIO(resp.content), mode="r:gz") as tar:
            files = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}  # type: ignore[union-attr]
        expected = generate_bundle_c(decode_bundle(data)).files
        assert files == {f"siq_model/{k}": v for k, v in expected.items()}

        cost = client.get(f"/bundles/{bid}/cost")
        assert cost.status_code == 200
        body = cost.json()
        assert body["bundle_id"] == bid
        assert body["total"] == cost_report(decode_bundle(data).manifest)["total"]
        assert "estimate" in body["note"]

        latest = client.get("/bundles/latest/cost", params={"dataset": "random-photo"})
        assert latest.status_code == 200 and latest.json()["bundle_id"] == bid


def test_unknown_bundle_is_404(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        for route in ("c", "cost"):
            resp = client.get(f"/bundles/{'0' * 64}/{route}")
            assert resp.status_code == 404
            assert resp.json()["error"]["code"] == "not_found"
