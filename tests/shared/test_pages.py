"""shared.api.pages serves a folder's index.html at / and its files at /static/<name>, and only
those; the two pages the services ship reference only files that exist and nothing outside
their own origin."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from client.api.pages import STATIC_DIR as CLIENT_STATIC
from server.service.api.pages import STATIC_DIR as SERVER_STATIC
from shared.api import pages_router


@pytest.fixture
def http(tmp_path: Path) -> TestClient:
    (tmp_path / "index.html").write_text("<!doctype html><title>t</title>")
    (tmp_path / "app.js").write_text("console.log(1)")
    (tmp_path / "notes.txt").write_text("not served: unknown type")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.js").write_text("nested: not served")
    app = FastAPI()
    app.include_router(pages_router(tmp_path))
    return TestClient(app)


def test_index_and_static_files_are_served_with_their_types(http: TestClient) -> None:
    page = http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    script = http.get("/static/app.js")
    assert script.status_code == 200 and script.text == "console.log(1)"
    assert script.headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize(
    "path", ["/static/notes.txt", "/static/missing.js", "/static/..%2fapp.js", "/static/sub/x.js"]
)
def test_anything_else_is_a_json_404(http: TestClient, path: str) -> None:
    answer = http.get(path)
    assert answer.status_code == 404
    assert "console.log" not in answer.text and "nested" not in answer.text


def test_an_unknown_name_names_the_files_there_are(http: TestClient) -> None:
    error = http.get("/static/missing.js").json()["error"]
    assert error["code"] == "not_found" and "app.js" in error["message"]


def test_a_folder_without_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="index.html"):
        pages_router(tmp_path)


@pytest.mark.parametrize("folder", [CLIENT_STATIC, SERVER_STATIC], ids=["client", "server"])
def test_shipped_pages_are_self_contained(folder: Path) -> None:
    index = (folder / "index.html").read_text()
    for ref in re.findall(r'(?:src|href)="(/static/[^"]+)"', index):
        assert (folder / ref.removeprefix("/static/")).is_file(), ref
    for path in folder.iterdir():
        # the SVG namespace is a name, not a fetch
        text = path.read_text().replace('"http://www.w3.org/2000/svg"', "")
        # no CDN, font or analytics: nothing is fetched from outside at run time
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), path.name
