"""SIQ_API_TOKEN: writes need the bearer token (401 without, 403 wrong); reads stay open
unless SIQ_PROTECT_READS; health endpoints never need it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.service.app import create_app
from tests.server.api_helpers import TINY_JOB, make_settings

TOKEN = "s3cret-token-for-tests"


def test_writes_need_the_token_reads_stay_open(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, "slow", api_token=TOKEN))) as client:
        missing = client.post("/quantize-jobs", json=TINY_JOB)
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "unauthorized"
        wrong = client.post(
            "/quantize-jobs", json=TINY_JOB, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 403
        assert client.get("/quantize-jobs").json()["total"] == 0  # nothing was created

        ok = client.post(
            "/quantize-jobs", json=TINY_JOB, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert ok.status_code == 202
        job_id = ok.json()["id"]
        assert client.get(f"/quantize-jobs/{job_id}").status_code == 200
        assert client.get("/bundles").status_code == 200
        assert client.get("/datasets").status_code == 200
        assert client.post(f"/quantize-jobs/{job_id}/cancel").status_code == 401
        cancel = client.post(
            f"/quantize-jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert cancel.status_code == 202


def test_protect_reads_covers_reads_but_not_health(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_token=TOKEN, protect_reads=True)
    with TestClient(create_app(settings)) as client:
        assert client.get("/quantize-jobs").status_code == 401
        assert client.get("/bundles").status_code == 401
        assert client.get("/datasets").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/quantize-jobs", headers=auth).status_code == 200
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    "settings, protected",
    [
        ({}, set()),
        ({"api_token": TOKEN}, {"post", "delete"}),
        ({"api_token": TOKEN, "protect_reads": True}, {"post", "delete", "get"}),
    ],
    ids=["no token", "token", "token and protected reads"],
)
def test_the_api_description_declares_the_token_where_it_is_checked(
    tmp_path: Path, settings: dict, protected: set[str]
) -> None:
    """Issue 28 item 11: security (and 401/403) is declared where this server demands the
    token, nowhere else; with no token the document has no security scheme at all."""
    with TestClient(create_app(make_settings(tmp_path, **settings))) as client:
        doc = client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    schemes = doc.get("components", {}).get("securitySchemes", {})
    assert bool(schemes) == ("api_token" in settings)
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            demanded = method in protected and path not in ("/healthz", "/readyz")
            assert ("security" in operation) == demanded, (method, path)
            assert ("401" in operation["responses"]) == demanded, (method, path)
            writes = method in ("post", "delete")
            assert ("507" in operation["responses"]) == writes, (method, path)
