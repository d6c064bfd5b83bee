"""The photo recipe's `draft` option (shared.image.load_image_for_recipe): a JPEG decodes at the
smallest DCT scale whose shorter side still reaches `resize`; other formats, and recipes
without the option (every bundle made before it), decode in full as before."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.errors import ConfigError
from shared.image import check_spec, decode_image, load_image_for_recipe, open_image, preprocess

FULL = {"kind": "photo", "resize": 64, "crop": 64}
DRAFT = {**FULL, "draft": True}


def photo(size: tuple[int, int], fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(0)
    w, h = size
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3))
    pixels = np.clip(ramp + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("size", "decoded"),
    [
        ((300, 300), (75, 75)),
        ((200, 150), (100, 75)),
        ((640, 130), (320, 65)),
        ((100, 70), (100, 70)),
    ],
)
def test_a_jpeg_decodes_at_the_smallest_scale_that_reaches_the_resize(size, decoded):
    image = load_image_for_recipe(open_image(photo(size)), DRAFT)
    assert image.size == decoded and min(image.size) >= 64
    assert preprocess(image, DRAFT).shape == (3, 64, 64)


def test_without_the_option_or_for_other_formats_the_decode_is_full():
    assert load_image_for_recipe(open_image(photo((300, 300))), FULL).size == (300, 300)
    assert load_image_for_recipe(open_image(photo((300, 300), "PNG")), DRAFT).size == (300, 300)
    full = preprocess(load_image_for_recipe(open_image(photo((300, 300), "PNG")), FULL), FULL)
    assert np.array_equal(
        full, preprocess(load_image_for_recipe(open_image(photo((300, 300), "PNG")), DRAFT), DRAFT)
    )


def test_the_draft_stays_close_to_the_full_decode():
    data = photo((300, 300))
    full = preprocess(decode_image(data), FULL)
    drafted = preprocess(decode_image(data, spec=DRAFT), DRAFT)
    assert drafted.shape == full.shape
    assert 0 < np.abs(drafted - full).mean() < 4 / 255  # other pixels, the same photo


def test_the_option_is_checked_and_only_kept_when_on():
    assert check_spec(DRAFT) == DRAFT
    assert check_spec({**FULL, "draft": False}) == FULL
    assert check_spec(FULL) == FULL
    with pytest.raises(ConfigError, match="draft"):
        check_spec({**FULL, "draft": "yes"})
