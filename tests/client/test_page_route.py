"""The client app serves its browser page at / with the hooks the page's users rely on."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_the_page_and_its_files_are_served(make_app, tmp_path, bundle_a) -> None:
    path = tmp_path / "a.siq"
    path.write_bytes(bundle_a)
    http = TestClient(make_app(str(path)))
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for hook in ("draw-pad", "recognize", "clear", "upload", "prediction"):
        assert f'data-testid="{hook}"' in page.text
    for name in ("app.js", "style.css"):
        assert http.get(f"/static/{name}").status_code == 200
    assert http.get("/static/app.py").status_code == 404
    # the API is unchanged beside it
    assert http.get("/bundle").json()["id"]
