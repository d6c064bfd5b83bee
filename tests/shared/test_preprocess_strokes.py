"""The digit preprocessing on drawings: a digit drawn small with a wide brush (as on the
client's pad) comes out with MNIST-like strokes, close to the same digit drawn large; a
thin pen line on a large page still has full-strength ink; ordinary strokes are untouched."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from shared.preprocess import preprocess_digit, stroke_width


def ring(size: int, box: tuple[int, int, int, int], width: int) -> Image.Image:
    """White ink on a black size x size canvas: an upright ellipse, a '0'."""
    image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(image).ellipse(box, outline=255, width=width)
    return image


def test_a_small_digit_drawn_with_a_wide_brush_gets_mnist_like_strokes() -> None:
    large = preprocess_digit(ring(280, (70, 30, 210, 250), 20))[0]
    small = preprocess_digit(ring(280, (115, 95, 165, 165), 20))[0]
    assert stroke_width(large) < 4.5
    assert stroke_width(small) <= 5.0  # ~6 px in the 20-pixel box before thinning
    assert small[13:16, 13:16].max() < 0.2  # the hole of the 0 is open
    assert np.abs(small - large).mean() < 0.12


def test_a_thin_line_on_a_large_page_has_full_strength_ink() -> None:
    page = Image.new("L", (900, 900), 255)
    ImageDraw.Draw(page).line([(450, 100), (440, 800)], fill=0, width=2)
    out = preprocess_digit(page)[0]
    assert out.max() == 1.0
    assert (out > 0.5).sum() >= 15  # a visible stroke, not a faint trace


def test_ordinary_strokes_are_left_alone() -> None:
    image = ring(280, (70, 30, 210, 250), 20)
    ink = np.asarray(image, np.float32) / 255.0
    out = preprocess_digit(image)[0]
    assert 2.0 < stroke_width(out) < 5.5
    # the same as fitting without any thinning: the box is 20 high, the mass centred
    rows = np.nonzero(out.max(1) > 0.1)[0]
    assert rows[-1] - rows[0] + 1 == 20
    assert ink.max() == 1.0
