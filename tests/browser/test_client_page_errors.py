"""The client's page in a real browser when a request goes wrong: a blank pad, a file that is
not an image, a refused PDF after a photo was recognised; and the page's icon. `python -m client` runs as a real
process serving a random bundle (tests/factories.py): nothing is trained, and what the
network answers does not matter here, only what the page shows around it."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.browser.conftest import DESKTOP, PHONE, serve
from tests.conftest import ServiceProcess
from tests.factories import make_random_bundle

# the start of a real PDF: what a user picks with "All files" in the file chooser
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("client-page-errors")
    bundle = root / "random.siq"
    bundle.write_bytes(make_random_bundle(3))
    yield from serve("client", data_dir, root, SIQ_BUNDLE=str(bundle))


@pytest.fixture(params=[DESKTOP, PHONE], ids=["desktop", "phone"])
def page(request: pytest.FixtureRequest, browser, client) -> Iterator[Any]:
    context = browser.new_context(**request.param)
    try:
        page = context.new_page()
        page.goto(client.url + "/")
        page.locator('[data-testid="bundle"][data-state="ready"]').wait_for(timeout=15000)
        yield page
    finally:
        context.close()


def _png(path: Path) -> Path:
    """A white stroke on black, 64x64: any image the network can be run on."""
    pixels = np.zeros((64, 64), np.uint8)
    pixels[12:52, 28:36] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def _broken_images(page) -> int:
    """Images on screen that the browser could not decode (the broken-image icon)."""
    return page.evaluate(
        "[...document.images].filter(i => i.checkVisibility() && i.complete"
        " && i.naturalWidth === 0).length"
    )


def test_a_refused_pdf_leaves_no_broken_image_and_no_old_answer(
    page, tmp_path: Path, artifacts: Path, request: pytest.FixtureRequest
) -> None:
    upload = page.get_by_test_id("upload")
    upload.set_input_files(str(_png(tmp_path / "stroke.png")))
    page.locator('[data-testid="prediction"][data-state="done"]').wait_for(timeout=15000)
    page.locator("#preview").wait_for(state="visible")
    assert "inference" in page.locator("#timing").inner_text()
    assert page.get_by_test_id("classes").locator("li").count() > 0

    upload.set_input_files(
        files=[{"name": "invoice.pdf", "mimeType": "application/pdf", "buffer": PDF}]
    )
    error = page.locator('[data-testid="prediction"][data-state="error"]')
    error.wait_for(timeout=15000)
    assert "not an image" in error.inner_text()
    # the failed request shows no timings and no bars, neither its own nor the photo's
    assert page.locator("#timing").inner_text() == ""
    assert page.get_by_test_id("classes").locator("li").count() == 0
    assert page.get_by_test_id("prediction").get_attribute("data-label") is None
    # and a line of text where the photo was, not a broken-image icon
    assert _broken_images(page) == 0
    assert not page.locator("#preview").is_visible()
    note = page.get_by_test_id("preview-note")
    note.wait_for(state="visible")
    assert "invoice.pdf" in note.inner_text()
    name = request.node.callspec.id
    page.screenshot(path=str(artifacts / f"client-refused-pdf-{name}.png"), full_page=True)

    page.get_by_test_id("clear").click()
    assert page.get_by_test_id("draw-pad").is_visible() and not note.is_visible()


def test_a_blank_pad_and_a_bad_file_say_what_is_wrong(page, tmp_path: Path) -> None:
    page.get_by_test_id("recognize").click()
    assert "Draw something" in page.get_by_test_id("prediction").inner_text()
    bad = tmp_path / "notes.png"  # named like an image, but is not one
    bad.write_bytes(np.arange(64, dtype=np.uint8).tobytes())
    page.get_by_test_id("upload").set_input_files(str(bad))
    error = page.locator('[data-testid="prediction"][data-state="error"]')
    error.wait_for(timeout=15000)
    assert "not an image" in error.inner_text()
    assert _broken_images(page) == 0
    page.get_by_test_id("preview-note").wait_for(state="visible")


def test_the_page_has_an_icon(browser, client) -> None:
    context = browser.new_context(**DESKTOP)
    try:
        page = context.new_page()
        failed: list[str] = []
        page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
        page.goto(client.url + "/")
        page.locator('[data-testid="bundle"][data-state="ready"]').wait_for(timeout=15000)
        href = page.locator("link[rel=icon]").get_attribute("href", timeout=5000)
        icon = page.request.get(client.url + href)
        assert icon.status == 200 and icon.headers["content-type"] == "image/svg+xml"
        assert failed == []
    finally:
        context.close()
