"""Where bundles come from: verification, live swaps, the cache, and start-up refusals."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from client.app import create_app, serve_main
from client.fetcher import BundleFetcher, FetchError
from client.settings import load_settings, parse_bundle_source
from shared.bundle import bundle_id
from shared.errors import BundleError, ConfigError
from tests.client.conftest import SERVER, FakeServer, png_bytes
from tests.conftest import wait_until

DIGIT = png_bytes(np.pad(np.full((12, 6), 0, np.uint8), 8, constant_values=255))


def served_id(http: TestClient) -> str:
    answer = http.post("/recognize", files={"file": ("d.png", DIGIT, "image/png")})
    assert answer.status_code == 200, answer.text
    return answer.json()["bundle_id"]


# --- fetcher ------------------------------------------------------------------------------


@pytest.mark.parametrize("redirect", [False, True])
def test_latest_is_fetched_verified_and_not_downloaded_twice(server, bundle_a, redirect):
    server.redirect = redirect
    fetcher = BundleFetcher(server.client(), SERVER)
    assert fetcher.fetch_latest("digits", None) is None  # nothing published yet
    bid = server.publish(bundle_a)
    fetched = fetcher.fetch_latest("digits", None)
    assert fetched.bundle.id == bid and fetched.data == bundle_a
    assert fetcher.fetch_latest("digits", bid) is None  # 304: unchanged, no body
    assert server.requests[-1].headers["if-none-match"] == f'"{bid}"'


def test_tampered_bytes_and_lying_headers_are_refused(server, bundle_a, bundle_b):
    bid = server.publish(bundle_a)
    fetcher = BundleFetcher(server.client(), SERVER)
    server.tamper = True
    with pytest.raises(BundleError, match="hash"):
        fetcher.fetch(bid)
    with pytest.raises(BundleError, match="hash"):
        fetcher.fetch_latest("digits", None)
    server.tamper = False
    server.files[bid] = bundle_b  # the server sends other bytes under the id
    with pytest.raises(BundleError):
        fetcher.fetch(bid)


def test_signatures_are_required_when_a_key_is_set(bundle_a):
    server = FakeServer(hmac_key="k1")
    bid = server.publish(bundle_a)
    assert BundleFetcher(server.client(), SERVER, "k1").fetch(bid).bundle.id == bid
    with pytest.raises(BundleError, match="wrong signature"):
        BundleFetcher(server.client(), SERVER, "other-key").fetch(bid)
    server.signature_override = "0" * 64
    with pytest.raises(BundleError, match="wrong signature"):
        BundleFetcher(server.client(), SERVER, "k1").fetch(bid)
    server.hmac_key = None  # unsigned
    with pytest.raises(BundleError, match="unsigned"):
        BundleFetcher(server.client(), SERVER, "k1").fetch(bid)


def test_server_trouble_is_a_fetch_error(server, bundle_a):
    fetcher = BundleFetcher(server.client(), SERVER)
    with pytest.raises(FetchError, match="404"):
        fetcher.fetch("a" * 64)
    server.down = True
    with pytest.raises(FetchError, match="ConnectError"):
        fetcher.fetch_latest("digits", None)


# --- live swap ----------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["bytes", "signature"])
def test_refused_bundle_keeps_the_previous_one_serving(make_app, bundle_a, bundle_b, attack):
    server = FakeServer(hmac_key="key")
    first = server.publish(bundle_a)
    app = make_app("latest:digits", server, bundle_hmac_key="key")
    http = TestClient(app)
    assert app.state.manager.refresh() is True and served_id(http) == first
    server.publish(bundle_b)
    if attack == "bytes":
        server.tamper = True
    else:
        server.signature_override = "f" * 64
    assert app.state.manager.refresh() is False
    assert served_id(http) == first
    assert http.get("/readyz").status_code == 200
    assert 'reason="refused"} 1.0' in http.get("/metrics").text
    server.tamper, server.signature_override = False, None
    assert app.state.manager.refresh() is True and served_id(http) == bundle_id(bundle_b)


def test_swap_under_concurrent_requests_drops_none(make_app, server, bundle_a, bundle_b):
    ids = [server.publish(bundle_a), bundle_id(bundle_b)]
    app = make_app("latest:digits", server)
    app.state.manager.refresh()
    http = TestClient(app)
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            answer = http.post("/recognize", files={"file": ("d.png", DIGIT, "image/png")})
            if answer.status_code != 200:
                failures.append(answer.text)
            else:
                seen.append(answer.json()["bundle_id"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    swaps = 0
    for i in range(6):  # a -> b -> a -> ...
        # let answers come in between swaps (by count, not by time: a loaded machine is slow)
        wait_until(lambda n=len(seen): len(seen) >= n + 4 or failures, 30, what="answers")
        server.publish(bundle_b if i % 2 == 0 else bundle_a)
        swaps += app.state.manager.refresh()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not failures and swaps == 6
    assert len(seen) > 20 and set(seen) == set(ids)


def test_restart_with_the_server_down_serves_from_the_cache(make_app, server, bundle_a):
    bid = server.publish(bundle_a)
    first = make_app("latest:digits", server)
    assert first.state.manager.refresh() is True
    server.down = True
    restarted = make_app("latest:digits", server)  # same state dir
    http = TestClient(restarted)
    assert http.get("/bundle").json()["source"] == "cache"
    assert served_id(http) == bid
    assert restarted.state.manager.refresh() is False  # still down: keeps serving
    assert served_id(http) == bid
    # an id source uses the cache only for that very id
    assert make_app(bid, server).state.manager.current.bundle.id == bid
    assert make_app("b" * 64, server).state.manager.current is None


def test_cache_with_a_bad_signature_is_ignored(make_app, bundle_a):
    server = FakeServer(hmac_key="key")
    server.publish(bundle_a)
    make_app("latest:digits", server, bundle_hmac_key="key").state.manager.refresh()
    assert make_app("latest:digits", server, bundle_hmac_key="key").state.manager.current
    assert make_app("latest:digits", server, bundle_hmac_key="new").state.manager.current is None


def test_lifespan_polls_an_id_until_loaded_and_stops_cleanly(make_app, server, bundle_a):
    bid = server.publish(bundle_a)
    app = make_app(bid, server, retry_interval_s=0.05)
    with TestClient(app) as http:
        deadline = time.monotonic() + 10
        while http.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert served_id(http) == bid
    assert "siq_client_bundle_swaps_total 1.0" in app.state.metrics.render().decode()


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bundle,url,words",
    [
        (None, None, "SIQ_BUNDLE is not set"),
        ("a" * 64, None, "needs SIQ_SERVER_URL"),
        ("latest:digits", None, "needs SIQ_SERVER_URL"),
        ("latest:../etc", "http://s", "not a data set name"),
        ("latest:digits", "ftp://s", "not an http"),
        ("/no/such/file.siq", "http://s", "neither a bundle id"),
    ],
)
def test_unusable_configurations_are_refused(bundle, url, words):
    with pytest.raises(ConfigError, match=words):
        parse_bundle_source(bundle, url)


def test_sources_are_parsed(tmp_path):
    assert parse_bundle_source("A" * 64, "http://s").value == "a" * 64
    assert parse_bundle_source("latest:mnist", "http://s").kind == "latest"
    path = tmp_path / "x.siq"
    path.write_bytes(b"")
    assert parse_bundle_source(str(path), None).kind == "file"


def test_serve_main_refuses_to_start_with_a_clear_message(monkeypatch, tmp_path, capsys):
    for key in ("SIQ_SERVER_URL", "SIQ_BUNDLE", "SIQ_BUNDLE_HMAC_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SIQ_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SIQ_BUNDLE", "c" * 64)
    assert serve_main(["--port", "0"]) == 2
    assert "needs SIQ_SERVER_URL" in capsys.readouterr().err
    monkeypatch.setenv("SIQ_MAX_IMAGES", "-3")
    with pytest.raises(ConfigError, match="SIQ_MAX_IMAGES"):
        load_settings()
    monkeypatch.delenv("SIQ_MAX_IMAGES")
    bad = tmp_path / "bad.siq"
    bad.write_bytes(b"not a bundle at all")
    monkeypatch.setenv("SIQ_BUNDLE", str(bad))
    with pytest.raises(ConfigError, match="bad.siq"):
        create_app()
