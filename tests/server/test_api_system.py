"""Health, readiness, metrics, data sets, OpenAPI, and refusing unusable settings."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.service.app import create_app
from server.service.settings import load_settings
from shared.errors import ConfigError
from tests.server.api_helpers import TINY_JOB, make_settings, wait_job


def test_health_ready_datasets(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "state_dir": "ok", "job_runner": "ok"}
        names = [d["name"] for d in client.get("/datasets").json()]
        assert "digits" in names and "mnist" not in names  # empty data dir


def test_readyz_is_503_when_state_dir_is_gone(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        for path in settings.bundle_dir.iterdir():
            path.unlink()
        settings.bundle_dir.rmdir()
        resp = client.get("/readyz")
        assert resp.status_code == 503
        assert resp.json()["checks"]["state_dir"].startswith("error")


@pytest.mark.slow
def test_metrics_count_jobs_and_requests(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        job_id = client.post("/quantize-jobs", json=TINY_JOB).json()["id"]
        wait_job(client, job_id)
        client.get("/quantize-jobs/nope")
        assert 'siq_jobs{status="succeeded"} 1.0' in client.get("/metrics").text
        # the duration is observed when the runner reaps the worker, a moment later
        duration = 'siq_job_duration_seconds_count{status="succeeded"} 1.0'
        deadline = time.monotonic() + 10
        while duration not in (text := client.get("/metrics").text):
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
        assert (
            'siq_http_requests_total{method="GET",route="/quantize-jobs/{job_id}",status="404"} 1.0'
            in text
        )
        assert 'siq_http_request_duration_seconds_bucket{le="0.1",method="POST"' in text


def test_openapi_describes_every_endpoint_and_errors(tmp_path: Path) -> None:
    # with a token, so writes declare 401 (without one they cannot answer it: test_api_auth)
    with TestClient(create_app(make_settings(tmp_path, api_token="tok"))) as client:
        spec = client.get("/openapi.json").json()
        paths = spec["paths"]
        for path in (
            "/quantize-jobs",
            "/quantize-jobs/{job_id}",
            "/quantize-jobs/{job_id}/cancel",
            "/bundles",
            "/bundles/{bundle_id}",
            "/bundles/{bundle_id}/manifest",
            "/datasets",
            "/healthz",
            "/readyz",
            "/metrics",
        ):
            assert path in paths, path
        post = paths["/quantize-jobs"]["post"]
        assert {"202", "401", "409", "422"} <= set(post["responses"])
        assert "QuantizeJobCreate" in str(post["requestBody"])
        assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"api_token": "   "}, "SIQ_API_TOKEN"),
        ({"max_concurrent_jobs": 0}, "SIQ_MAX_CONCURRENT_JOBS"),
        ({"pipeline": "no-colon"}, "SIQ_PIPELINE"),
        ({"port": 70000}, "SIQ_PORT"),
    ],
)
def test_bad_settings_are_refused_by_name(tmp_path: Path, overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(state_dir=tmp_path, **overrides)


def test_unwritable_state_dir_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="SIQ_STATE_DIR"):
        create_app(make_settings(tmp_path, state_dir=blocker / "state"))
    if os.geteuid() != 0:  # root can write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="not a writable directory"):
            create_app(make_settings(tmp_path, state_dir=locked))


def test_second_server_on_same_state_dir_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings)):
        other = TestClient(create_app(settings))
        with pytest.raises(ConfigError, match="another server"), other:
            pass


def test_empty_env_token_means_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIQ_API_TOKEN", "")
    monkeypatch.setenv("SIQ_STATE_DIR", str(tmp_path))
    assert load_settings().api_token is None
    monkeypatch.setenv("SIQ_API_TOKEN", "tok")
    assert load_settings().api_token == "tok"


def test_serve_main_exits_2_with_a_message_on_bad_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.service.app import serve_main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("SIQ_STATE_DIR", str(blocker))
    assert serve_main(["--port", "8123"]) == 2
    assert "SIQ_STATE_DIR" in capsys.readouterr().err
    monkeypatch.setenv("SIQ_STATE_DIR", str(tmp_path / "ok"))
    assert serve_main(["--port", "0"]) == 2
    assert "SIQ_PORT" in capsys.readouterr().err
