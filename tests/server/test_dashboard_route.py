"""The server app serves its dashboard at /, without the token even when reads are
protected (the page holds no data; it asks for the token when the API answers 401)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from server.service.app import create_app
from tests.server.api_helpers import make_settings


def test_the_dashboard_and_its_files_are_served(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_token="t0ken", protect_reads=True)
    with TestClient(create_app(settings)) as http:
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for hook in ("job-form", "jobs-table", "bundles-table", "size-chart", "token-dialog"):
            assert f'data-testid="{hook}"' in page.text
        for name in ("app.js", "charts.js", "style.css"):
            assert http.get(f"/static/{name}").status_code == 200
        assert http.get("/datasets").status_code == 401  # the API itself still needs it
        spec = http.get("/openapi.json", headers={"Authorization": "Bearer t0ken"}).json()
        assert "/" not in spec["paths"]  # the page is not part of the API
