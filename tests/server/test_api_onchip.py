"""GET /bundles/{id}/c and /bundles/{id}/cost: the generated C sources as a .tar.gz and the
cost report, for a bundle file the server found at start; 404 for an unknown bundle."""

from __future__ import annotations

import io
import tarfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.service.api import bundles as bundles_api
from server.service.api import onchip
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
        model = generate_bundle_c(decode_bundle(data))
        expected = {**model.files, **model.example}  # the library and siq_example.c
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


def test_derived_files_are_built_once_however_many_ask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 28 item 10: 8 concurrent requests for a bundle's C sources (and its ONNX, its
    cost) make it once; the file is kept, so a restarted server does not make it again."""
    settings = make_settings(tmp_path)
    bid = write_bundle_atomic(settings.bundle_dir, make_random_bundle(seed=7)).stem
    builds: Counter[str] = Counter()

    def counted(module: object, name: str) -> None:
        real = getattr(module, name)

        def build(*args: object, **kwargs: object) -> object:
            builds[name] += 1
            time.sleep(0.2)  # long enough for the other requests to arrive meanwhile
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, build)

    counted(onchip, "generate_bundle_c")
    counted(onchip, "cost_report")
    counted(bundles_api, "to_onnx")
    paths = [f"/bundles/{bid}/c", f"/bundles/{bid}/cost", f"/bundles/{bid}/onnx"]
    for _ in range(2):  # the second time a new server on the same state directory
        with TestClient(create_app(settings)) as client, ThreadPoolExecutor(8) as pool:
            for path in paths:
                answers = list(pool.map(client.get, [path] * 8))
                assert {a.status_code for a in answers} == {200}, path
                assert len({a.content for a in answers}) == 1, path
            images = client.get(f"/bundles/{bid}/onnx", params={"inputs": "images"})
            assert images.status_code == 200 and images.content != answers[0].content
    assert builds == {"generate_bundle_c": 1, "cost_report": 1, "to_onnx": 2}
