"""What a careless or hostile caller found (issue 11, items 3, 4, 9, 10 and parts of 11):
bodies refused before parsing, auth before the body, bounded echoes and integers, a 500 that
names no internals and keeps the connection, corrupt databases, protected reads."""

from __future__ import annotations

import select
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from server.service.app import create_app, serve_main
from server.service.jobs import JobStore
from shared.errors import ConfigError
from tests.server.api_helpers import TINY_JOB, make_settings, plain_job


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[str, object]]:
    """A real uvicorn server in a thread (keep-alive and socket behaviour are uvicorn's)."""
    settings = make_settings(tmp_path, api_token="tok", body_timeout_s=0.5, max_body_bytes=4096)
    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(timeout=15)


def test_a_500_names_no_internals_and_keeps_the_connection(
    live: tuple[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = live

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret /var/lib/siq/siq.db detail")

    monkeypatch.setattr(JobStore, "page", broken)
    with httpx.Client(base_url=url) as http:
        first = http.get("/quantize-jobs")
        assert first.status_code == 500
        assert first.json()["error"]["code"] == "internal_error"
        assert "secret" not in first.text and "RuntimeError" not in first.text
        assert http.get("/healthz").status_code == 200  # same keep-alive connection


def test_integer_parameters_are_bounded(live: tuple[str, object]) -> None:
    url, _ = live
    with httpx.Client(base_url=url) as http:
        huge = http.get("/quantize-jobs", params={"offset": "9223372036854775808"})
        assert huge.status_code == 422, huge.text
        assert huge.json()["error"]["field"] == "offset"
        assert http.get("/quantize-jobs", params={"offset": 1 << 31}).status_code == 200
        assert http.get("/healthz").status_code == 200


def test_a_body_over_the_limit_is_refused_before_it_is_read(live: tuple[str, object]) -> None:
    url, _ = live
    auth = {"Authorization": "Bearer tok"}
    with httpx.Client(base_url=url) as http:
        big = b'{"dataset": "' + b"x" * 10_000 + b'"}'
        declared = http.post("/quantize-jobs", content=big, headers=auth)
        assert declared.status_code == 413 and "SIQ_MAX_BODY_BYTES" in declared.text

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            yield b'{"dataset": "'
            yield b"x" * 10_000
            yield b'"}'

        streamed = http.post("/quantize-jobs", content=chunks(), headers=auth)
        assert streamed.status_code == 413
    with httpx.Client(base_url=url) as http:
        assert http.get("/healthz").status_code == 200


def test_the_token_is_checked_before_the_body(live: tuple[str, object]) -> None:
    url, _ = live
    with httpx.Client(base_url=url) as http:
        # over the limit and unauthenticated: the 401 comes first, from the headers alone
        resp = http.post("/quantize-jobs", content=b"{" * 10_000)
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == "Bearer"
        wrong = http.post("/quantize-jobs", json=TINY_JOB, headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 403


def _job_post(live: tuple[str, object], first: bytes) -> socket.socket:
    """A socket that has sent a job's headers (a 100-byte body) and the body's `first` bytes."""
    host, port = live[0].removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=10)
    conn.sendall(
        b"POST /quantize-jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" + first
    )
    return conn


def test_a_body_that_stops_arriving_is_timed_out(live: tuple[str, object]) -> None:
    with _job_post(live, first=b'{"data') as conn:
        started = time.monotonic()
        answer = conn.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 5


def test_a_body_that_trickles_in_gets_408_at_the_deadline_for_the_whole_body(
    live: tuple[str, object],
) -> None:
    """One byte every 0.3 s never lets a 0.5 s wait between reads run out: the deadline is for
    the whole body (issue 28 item 2), so the answer is a 408 long before the 100 bytes are in."""
    with _job_post(live, first=b"") as conn:
        answered = False
        for _ in range(40):  # at most 12 s of trickle, 40 of the 100 bytes
            try:
                conn.sendall(b" ")
            except OSError:  # the server answered and closed
                answered = True
                break
            answered = bool(select.select([conn], [], [], 0.3)[0])
            if answered:
                break
        assert answered, "no answer while the body trickled in"
        answer = conn.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"whole body" in answer


def test_a_validation_error_does_not_echo_a_hostile_body(tmp_path: Path) -> None:
    body = {**TINY_JOB, **{f"k{i}": i for i in range(5000)}}
    settings = make_settings(tmp_path, max_body_bytes=1 << 20)
    with TestClient(create_app(settings)) as client:
        resp = client.post("/quantize-jobs", json=body)
        assert resp.status_code == 422
        assert len(resp.content) < 4096, len(resp.content)
        assert "and 4990 more problems" in resp.json()["error"]["message"]


def test_empty_idempotency_key_is_refused(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        resp = client.post("/quantize-jobs", json=TINY_JOB, headers={"Idempotency-Key": " "})
        assert resp.status_code == 422
        assert resp.json()["error"]["field"] == "Idempotency-Key"


def test_protect_reads_covers_metrics_and_the_api_description(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_token="tok", protect_reads=True)
    with TestClient(create_app(settings)) as client:
        for path in ("/metrics", "/openapi.json", "/docs", "/quantize-jobs", "/datasets"):
            assert client.get(path).status_code == 401, path
            ok = client.get(path, headers={"Authorization": "Bearer tok"})
            assert ok.status_code == 200, path
        for path in ("/healthz", "/readyz"):
            assert client.get(path).status_code == 200, path
    settings = make_settings(tmp_path / "open", api_token="tok")
    with TestClient(create_app(settings)) as client:  # reads open by default
        assert client.get("/metrics").status_code == 200
        assert client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("kind", ["garbage", "truncated", "directory"])
def test_an_unusable_database_is_one_clear_line(
    tmp_path: Path,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(tmp_path)
    settings.state_dir.mkdir(parents=True)
    if kind == "garbage":
        settings.db_path.write_bytes(b"this is not sqlite" * 100)
    elif kind == "truncated":
        with TestClient(create_app(settings)) as client:
            client.post("/quantize-jobs", json=TINY_JOB)
        data = settings.db_path.read_bytes()
        settings.db_path.write_bytes(data[: len(data) // 2 + 7])
        for extra in settings.state_dir.glob("siq.db-*"):
            extra.unlink()
    else:
        settings.db_path.mkdir()
    with pytest.raises(ConfigError, match="siq.db"):
        create_app(settings)
    monkeypatch.setenv("SIQ_STATE_DIR", str(settings.state_dir))
    assert serve_main(["--port", "8765"]) == 2
    err = capsys.readouterr().err.strip()
    assert "siq.db" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_readiness_sees_corrupted_pages(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    app = create_app(settings)
    store = JobStore(settings.db_path)
    for i in range(300):  # ended jobs: the runner has nothing to touch meanwhile
        store.cancel(store.create(plain_job({**TINY_JOB, "seed": i}))[0].id)
    with TestClient(app) as client:
        conn = sqlite3.connect(settings.db_path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.close()
        assert client.get("/readyz").status_code == 200
        with settings.db_path.open("r+b") as db:  # one b-tree page scrambled under the server
            assert db.seek(0, 2) > 8 * page_size
            db.seek(5 * page_size)
            db.write(b"\xa5" * page_size)
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["database"].startswith("error")
    with pytest.raises(ConfigError, match="siq.db"):  # and a fresh start refuses it
        create_app(settings)


def test_a_second_server_on_the_state_dir_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path)
    monkeypatch.setenv("SIQ_STATE_DIR", str(settings.state_dir))
    with TestClient(create_app(settings)):
        assert serve_main(["--port", "8766"]) == 2
    err = capsys.readouterr().err.strip()
    assert "another server" in err and "Traceback" not in err and len(err.splitlines()) == 1
