"""Job and sweep bodies are bounded where they are cheap to refuse (issue 28, item 5): the
body's size before it is parsed (413), each per-layer map's length before its entries are
validated (422 naming the map), while ordinary bodies are accepted as before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.params import MAX_LAYERS
from server.service.api.bounded_body import MAX_JOB_BODY_BYTES
from server.service.app import create_app
from tests.server.api_helpers import TINY_JOB, TINY_SWEEP, make_settings

ROUTES = {"/quantize-jobs": TINY_JOB, "/quantize-sweeps": TINY_SWEEP}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path, "slow", max_body_bytes=1 << 20))) as c:
        yield c


def _layers(n: int) -> dict[str, int]:
    """n short, distinct layer names (base 36), each given 4 bits."""
    names = []
    for i in range(n):
        name = ""
        while True:
            i, digit = divmod(i, 36)
            name += "0123456789abcdefghijklmnopqrstuvwxyz"[digit]
            if i == 0:
                break
        names.append(name)
    return dict.fromkeys(names, 4)


def _compact(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


@pytest.mark.parametrize("route", ROUTES)
def test_a_1_mib_body_of_110000_layers_is_refused_by_its_size(
    client: TestClient, route: str
) -> None:
    body = _compact({**ROUTES[route], "bits_per_layer": _layers(110_000)})
    assert MAX_JOB_BODY_BYTES < len(body) <= 1 << 20  # within the server-wide bound
    resp = client.post(route, content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["code"] == "body_too_large"
    assert str(MAX_JOB_BODY_BYTES) in resp.json()["error"]["message"]
    # without a Content-Length (chunked) it is measured once read, still before parsing
    chunks = iter([body[: len(body) // 2], body[len(body) // 2 :]])
    resp = client.post(route, content=chunks, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert client.get("/quantize-jobs").json()["total"] == 0


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("field", ["bits_per_layer", "sparsity_per_layer"])
def test_a_map_longer_than_a_network_has_layers_is_422(
    client: TestClient, route: str, field: str
) -> None:
    layers = _layers(2_000)
    if field == "sparsity_per_layer":
        layers = dict.fromkeys(layers, 0.5)
    body = _compact({**ROUTES[route], field: layers})
    assert len(body) <= MAX_JOB_BODY_BYTES  # small enough to be parsed: the map's bound acts
    resp = client.post(route, content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["field"] == field and str(MAX_LAYERS) in error["message"]
    assert client.get("/quantize-jobs").json()["total"] == 0


def test_ordinary_bodies_are_accepted(client: TestClient) -> None:
    full = _layers(MAX_LAYERS)
    job = {**TINY_JOB, "bits_per_layer": full, "sparsity_per_layer": dict.fromkeys(full, 0.5)}
    resp = client.post("/quantize-jobs", json=job)
    assert resp.status_code == 202, resp.text
    assert resp.json()["config"]["bits_per_layer"] == full
    resp = client.post("/quantize-sweeps", json={**TINY_SWEEP, "bits_per_layer": {"fc1": 2}})
    assert resp.status_code == 202, resp.text
    assert resp.json()["config"]["bits_per_layer"] == {"fc1": 2}
