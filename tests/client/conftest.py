"""Client test fixtures: bundles from tests/factories.py, a fake training server behind an
httpx MockTransport (no network), and app builders with per-test state directories."""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from client.app import create_app
from client.settings import ClientSettings, parse_bundle_source
from shared.bundle import bundle_id, sign
from tests.factories import make_random_bundle

SERVER = "http://server.test"


class FakeServer:
    """The bundle routes of the training server, in memory. `down` makes every request fail
    at the connection; `tamper` flips a byte of every file served; `redirect` answers
    /bundles/latest with a 307 instead of the file."""

    def __init__(self, hmac_key: str | None = None):
        self.files: dict[str, bytes] = {}
        self.latest: dict[str, str] = {}
        self.hmac_key = hmac_key
        self.signature_override: str | None = None
        self.down = False
        self.tamper = False
        self.redirect = False
        self.requests: list[httpx.Request] = []

    def publish(self, data: bytes, dataset: str = "digits") -> str:
        bid = bundle_id(data)
        self.files[bid] = data
        self.latest[dataset] = bid
        return bid

    def _file(self, bid: str) -> httpx.Response:
        data = self.files[bid]
        headers = {"ETag": f'"{bid}"', "X-SIQ-Bundle-SHA256": bid, "X-SIQ-Bundle-Id": bid}
        if self.hmac_key:
            headers["X-SIQ-Signature"] = self.signature_override or sign(data, self.hmac_key)
        if self.tamper:
            data = data[:-1] + bytes([data[-1] ^ 1])
        return httpx.Response(200, content=data, headers=headers)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == "/bundles/latest":
            bid = self.latest.get(request.url.params.get("dataset", ""))
            if bid is None:
                return httpx.Response(404, json={"error": {"code": "not_found", "message": "-"}})
            if request.headers.get("if-none-match", "").strip('"') == bid:
                return httpx.Response(304, headers={"ETag": f'"{bid}"'})
            if self.redirect:
                return httpx.Response(307, headers={"Location": f"/bundles/{bid}"})
            return self._file(bid)
        if path.startswith("/bundles/"):
            bid = path.split("/")[2]
            if bid in self.files:
                return self._file(bid)
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler), timeout=5)


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture(scope="session")
def bundle_a() -> bytes:
    return make_random_bundle(1)


@pytest.fixture(scope="session")
def bundle_b() -> bytes:
    return make_random_bundle(2)


AppFactory = Callable[..., object]


def build_app(root: Path, bundle: str, server: FakeServer | None = None, **overrides):
    """A client app (lifespan not started) with its state under `root`, polling off."""
    values = {
        "server_url": SERVER if server else None,
        "bundle": bundle,
        "state_dir": root / "state",
        "poll_interval_s": 3600,
        "retry_interval_s": 3600,
    }
    values.update(overrides)
    settings = ClientSettings(**values)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    source = parse_bundle_source(settings.bundle, settings.server_url)
    return create_app(settings, source, http=server.client() if server else None)


@pytest.fixture
def bundle_file(tmp_path: Path, bundle_a: bytes) -> Path:
    """bundle_a as a file: a client's SIQ_BUNDLE."""
    path = tmp_path / "a.siq"
    path.write_bytes(bundle_a)
    return path


@pytest.fixture
def make_app(tmp_path: Path) -> AppFactory:
    """make_app(bundle, server=None, **settings) -> FastAPI app (lifespan not started)."""
    return functools.partial(build_app, tmp_path)


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()
