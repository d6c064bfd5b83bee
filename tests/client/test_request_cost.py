"""What one /recognize request may cost (issue 11, item 1): the decoded pixels of all its
images are bounded together, known from the headers before any pixel is decoded, and the
images are decoded one at a time."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import client.serving.decode as recognize_module
from client.settings import load_settings
from shared.errors import ConfigError
from tests.client.conftest import png_bytes
from tests.samples import mnist_test_digits


@pytest.fixture(scope="module")
def large_digit() -> bytes:
    """A 1000x1000 RGBA PNG of a digit: one million pixels, a few kilobytes of file."""
    digit = Image.fromarray(255 - mnist_test_digits(1)[0]).resize((1000, 1000))
    buf = io.BytesIO()
    digit.convert("RGBA").save(buf, format="PNG")
    return buf.getvalue()


class DecodeWatch:
    """Counts the images decoded and the most that were decoded and not yet released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.decoded = 0
        self.alive = 0
        self.most_alive = 0
        self.lock = threading.Lock()
        original_load, original_close = recognize_module.load_image_for_recipe, Image.Image.close
        watch = self

        def load(image, spec):
            with watch.lock:
                watch.decoded += 1
                watch.alive += 1
                watch.most_alive = max(watch.most_alive, watch.alive)
                image._siq_watched = True
            return original_load(image, spec)

        def close(image):
            if getattr(image, "_siq_watched", False):
                with watch.lock:
                    watch.alive -= 1
                image._siq_watched = False
            return original_close(image)

        monkeypatch.setattr(recognize_module, "load_image_for_recipe", load)
        monkeypatch.setattr(Image.Image, "close", close)


def post_images(http: TestClient, images: list[bytes]):
    return http.post(
        "/recognize", files=[("files", (f"i{i}.png", b)) for i, b in enumerate(images)]
    )


def test_a_request_over_the_pixel_budget_is_refused_before_any_decoding(
    make_app, bundle_file, large_digit, monkeypatch
):
    watch = DecodeWatch(monkeypatch)
    http = TestClient(
        make_app(str(bundle_file), max_pixels=2_000_000, max_request_pixels=5_000_000)
    )
    answer = post_images(http, [large_digit] * 6)  # 6 M pixels > 5 M
    assert answer.status_code == 413, answer.text
    error = answer.json()["error"]
    assert error["code"] == "image_too_large" and "6000000 pixels" in error["message"]
    assert watch.decoded == 0  # the headers alone told the cost
    ok = post_images(http, [large_digit] * 5)  # right at the budget
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["results"]) == 5


def test_images_are_decoded_one_at_a_time(make_app, bundle_file, large_digit, monkeypatch):
    watch = DecodeWatch(monkeypatch)
    http = TestClient(make_app(str(bundle_file), max_request_pixels=16_000_000))
    answer = post_images(http, [large_digit, png_bytes(255 - mnist_test_digits(2)[1])] * 4)
    assert answer.status_code == 200, answer.text
    assert watch.decoded == 8 and watch.most_alive == 1 and watch.alive == 0


def test_a_corrupt_image_after_good_ones_names_itself(make_app, bundle_file, large_digit):
    http = TestClient(make_app(str(bundle_file)))
    truncated = large_digit[: len(large_digit) // 2]
    answer = post_images(http, [large_digit, truncated])
    assert answer.status_code == 422
    assert answer.json()["error"]["message"].startswith("image 1 (i1.png)")


def test_an_image_larger_than_a_request_may_be_is_a_bad_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("SIQ_BUNDLE", str(tmp_path / "x.siq"))
    monkeypatch.setenv("SIQ_MAX_PIXELS", "20000000")
    monkeypatch.setenv("SIQ_MAX_REQUEST_PIXELS", "10000000")
    with pytest.raises(ConfigError, match="SIQ_MAX_REQUEST_PIXELS"):
        load_settings()


def test_the_default_budget_admits_a_full_batch_of_digits(make_app, bundle_file):
    http = TestClient(make_app(str(bundle_file)))
    digits = [png_bytes(255 - d) for d in mnist_test_digits(64)]
    answer = post_images(http, digits)
    assert answer.status_code == 200 and len(answer.json()["results"]) == 64
    assert np.isfinite([r["confidence"] for r in answer.json()["results"]]).all()
