"""The client's page in a real browser: digits drawn on the pad with pointer events (the mouse,
and a finger's touches on a phone-sized touch screen) are recognised, an office photo chosen with the
file input gets the label the integer engine gives that file, and screenshots are kept.

`python -m client` runs as a real process serving a bundle file the fixture trains: MNIST
(the committed sample's 8k images, 2 epochs, one SIQ pass; under a minute on 2 quiet cores) for the pad, and a tiny office10
photonet for the upload. The PNGs the pad sent are saved beside the screenshots. What the page
shows when a request fails is in test_client_page_errors.py (no training there)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import DESKTOP, PHONE, serve
from tests.browser.strokes import digit_strokes
from tests.conftest import ServiceProcess
from tests.samples import sample_mnist_source

pipeline = pytest.importorskip("server.training.pipeline", reason="needs the server extra (torch)")
# training a bundle or a job inside a test: minutes when the machine is shared, not seconds
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# (digit, scale, dx, dy, slant): each digit as drawn twice, once large and upright, once
# smaller, off-centre and slanted (the preprocessing crops and centres both)
DRAWINGS = [(d, 1.0, 0.0, 0.0, 0.0) for d in range(10)] + [
    (d, 0.6, 0.12 if d % 2 else -0.1, -0.08 if d % 3 else 0.1, 0.2 if d % 2 else -0.12)
    for d in range(10)
]
MIN_CORRECT = 18  # of the 20 drawings


def _train(tmp: Path, data_dir: Path, **config) -> Path:
    from server.params import JobParams

    result = pipeline.run_pipeline(JobParams(**config), data_dir, tmp)
    return Path(result.bundle_path)


@pytest.fixture(scope="module")
def mnist_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with sample_mnist_source():  # the committed sample: its first 8000 are MNIST's
        return _train(
            tmp_path_factory.mktemp("mnist"),
            None,
            dataset="mnist",
            weight_bits=4,
            activation_bits=4,
            epochs=2,
            retrain_epochs=0.25,
            max_iterations=1,
            seed=0,
            train_limit=8000,
            test_limit=500,
        )


@pytest.fixture(scope="module")
def photo_bundle(tmp_path_factory: pytest.TempPathFactory, office10_dir: Path) -> Path:
    return _train(
        tmp_path_factory.mktemp("office"),
        office10_dir.parent,
        dataset="office10",
        weight_bits=4,
        activation_bits=5,
        epochs=1,
        retrain_epochs=0.5,
        max_iterations=1,
        seed=0,
        train_limit=40,
        test_limit=8,
    )


@pytest.fixture(scope="module")
def digit_client(mnist_bundle, data_dir, tmp_path_factory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("digit-client")
    yield from serve("client", data_dir, root, SIQ_BUNDLE=str(mnist_bundle))


@pytest.fixture(scope="module")
def photo_client(photo_bundle, data_dir, tmp_path_factory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("photo-client")
    yield from serve("client", data_dir, root, SIQ_BUNDLE=str(photo_bundle))


def _draw(page, strokes, *, touch: bool = False) -> None:
    """Each stroke as pointer events: press, move through the points, release."""
    box = page.get_by_test_id("draw-pad").bounding_box()
    to_page = [
        [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        for stroke in strokes
    ]
    if touch:  # a finger: real touch input through the DevTools protocol
        cdp = page.context.new_cdp_session(page)
        for stroke in to_page:
            for i, (x, y) in enumerate(stroke):
                kind = "touchStart" if i == 0 else "touchMove"
                cdp.send(
                    "Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]}
                )
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        cdp.detach()
        return
    for stroke in to_page:
        page.mouse.move(*stroke[0])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(x, y, steps=2)
        page.mouse.up()


def _recognise(page) -> str:
    page.get_by_test_id("recognize").click()
    prediction = page.locator('[data-testid="prediction"][data-state="done"]')
    prediction.wait_for(timeout=15000)
    return prediction.inner_text()


def _save_pad(page, path: Path) -> None:
    url = page.get_by_test_id("draw-pad").evaluate("pad => pad.toDataURL('image/png')")
    path.write_bytes(base64.b64decode(url.split(",", 1)[1]))


def test_drawn_digits_are_recognised(browser, digit_client, artifacts: Path) -> None:
    context = browser.new_context(**DESKTOP)
    page = context.new_page()
    try:
        page.goto(digit_client.url + "/")
        page.locator('[data-testid="bundle"][data-state="ready"]').wait_for(timeout=15000)
        assert "mnist" in page.get_by_test_id("bundle").inner_text()
        drawings = artifacts / "drawings"
        drawings.mkdir(exist_ok=True)
        answers = []
        for i, (digit, scale, dx, dy, slant) in enumerate(DRAWINGS):
            page.get_by_test_id("clear").click()
            _draw(page, digit_strokes(digit, scale=scale, dx=dx, dy=dy, slant=slant))
            text = _recognise(page)
            answers.append((digit, text))
            _save_pad(page, drawings / f"{i:02d}-digit{digit}.png")
            if i == 7:
                page.screenshot(path=str(artifacts / "client-digit-desktop.png"), full_page=True)
        correct = sum(text.startswith(str(digit)) for digit, text in answers)
        assert correct >= MIN_CORRECT, answers
        # the top classes are shown as bars, the best first
        assert page.get_by_test_id("classes").locator("li").count() == 5
    finally:
        context.close()


def test_a_finger_draws_on_a_phone(browser, digit_client, artifacts: Path) -> None:
    context = browser.new_context(**PHONE)
    page = context.new_page()
    try:
        page.goto(digit_client.url + "/")
        page.locator('[data-testid="bundle"][data-state="ready"]').wait_for(timeout=15000)
        pad = page.get_by_test_id("draw-pad").bounding_box()
        assert pad["width"] <= 390 and pad["x"] >= 0  # the pad fits the phone's width
        _draw(page, digit_strokes(7), touch=True)
        assert _recognise(page).startswith("7")
        page.screenshot(path=str(artifacts / "client-digit-phone.png"), full_page=True)
        page.get_by_test_id("clear").click()
        assert page.get_by_test_id("prediction").get_attribute("data-state") == "idle"
    finally:
        context.close()


def test_an_office_photo_is_recognised(
    browser, photo_client, photo_bundle: Path, office10_dir: Path, artifacts: Path
) -> None:
    from shared.bundle import read_bundle_file
    from shared.engine import IntegerNetwork
    from shared.image import preprocess_bytes

    bundle = read_bundle_file(photo_bundle)
    photo = sorted((office10_dir / "test" / "cup").glob("*"))[0]
    spec = bundle.manifest["input"]["preprocess"]
    labels, _ = IntegerNetwork(bundle).predict(preprocess_bytes(photo.read_bytes(), spec)[None])
    expected = bundle.class_names[int(labels[0])]
    for name, device in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(**device)
        page = context.new_page()
        try:
            page.goto(photo_client.url + "/")
            page.locator('[data-testid="bundle"][data-state="ready"]').wait_for(timeout=15000)
            page.get_by_test_id("upload").set_input_files(str(photo))
            prediction = page.locator('[data-testid="prediction"][data-state="done"]')
            prediction.wait_for(timeout=15000)
            assert prediction.inner_text().startswith(expected)
            assert page.locator("#preview").is_visible()
            page.screenshot(path=str(artifacts / f"client-photo-{name}.png"), full_page=True)
        finally:
            context.close()
