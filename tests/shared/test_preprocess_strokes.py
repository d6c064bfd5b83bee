"""The digit preprocessing on drawings: a thin pen line on a large page keeps full-strength
ink after the shrinking, and a digit drawn small on the client's pad comes out like the
same digit drawn large (the crop and the fit make the size irrelevant)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from shared.image import preprocess_digit


def ring(size: int, box: tuple[int, int, int, int], width: int) -> Image.Image:
    """White ink on a black size x size canvas: an upright ellipse, a '0'."""
    image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(image).ellipse(box, outline=255, width=width)
    return image


def test_a_thin_line_on_a_large_page_has_full_strength_ink() -> None:
    page = Image.new("L", (900, 900), 255)
    ImageDraw.Draw(page).line([(450, 100), (440, 800)], fill=0, width=2)
    out = preprocess_digit(page)[0]
    assert out.max() == 1.0
    assert (out > 0.5).sum() >= 15  # a visible stroke, not a faint trace


def test_a_small_drawing_comes_out_like_a_large_one() -> None:
    large = preprocess_digit(ring(280, (70, 30, 210, 250), 12))[0]
    small = preprocess_digit(ring(280, (125, 105, 160, 160), 3))[0]
    assert np.abs(small - large).mean() < 0.08
    rows = np.nonzero(small.max(1) > 0.1)[0]
    assert rows[-1] - rows[0] + 1 == 20  # fitted into the 20-pixel box
