"""The digit recipe of shared.image against its straightforward form (the code before
its per-call overheads were cut, kept here as the reference): the same float32 arrays, bit for
bit, on MNIST test digits and on images of every mode and polarity."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.errors import ImageError
from shared.image import decode_image, image_to_float, preprocess_digit
from shared.image.preprocessing import (
    _BOX_INK,
    _WORK_SIDE,
    DIGIT_BOX,
    DIGIT_CENTRE,
    DIGIT_SIZE,
    _gray,
    _quartiles,
)
from tests.samples import mnist_test_digits

# --- the reference: shared.image's digit recipe as first written ----------------------------------


def ref_to_255ths(x: np.ndarray) -> np.ndarray:
    return (np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def ref_luma(rgb: np.ndarray) -> np.ndarray:
    # ITU-R 601-2, the weights of PIL's "L" conversion
    return rgb[:, :, 0] * 0.299 + rgb[:, :, 1] * 0.587 + rgb[:, :, 2] * 0.114


def ref_ink(gray: np.ndarray) -> np.ndarray:
    """(H, W) gray -> (H, W) ink >= 0, whichever polarity; the border is background."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    # Ink pulls the mean away from the background: below it for dark ink on light paper.
    ink = background - gray if float(gray.mean()) < background else gray - background
    ink = np.clip(ink, 0.0, None)
    # Paper texture / sensor noise: the ink the border shows is not ink.
    edge = np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]])
    q25, q50, q75 = np.percentile(edge, [25, 50, 75])  # robust to a digit touching the border
    floor = min(float(q50 + 6.0 * (q75 - q25)), 0.5 * float(ink.max()))
    return np.clip(ink - floor, 0.0, None)


def reference_preprocess_digit(image: Image.Image) -> np.ndarray:
    """MNIST layout: float32 (1, 28, 28), ink = 1, centre of mass at (14, 14)."""
    if max(image.size) > _WORK_SIDE:
        image = image.copy()
        image.thumbnail((_WORK_SIDE, _WORK_SIDE), Image.Resampling.BILINEAR)
    rgb, alpha = image_to_float(image)
    gray = ref_luma(rgb)  # (H, W)
    if alpha is not None and float(alpha.min()) < 0.99:
        opaque = gray[alpha > 0.5]
        if opaque.size == 0:
            raise ImageError("the image is fully transparent: no digit found")
        if float(opaque.std()) < 0.05:
            ink = alpha  # one colour drawn on transparency: the opacity is the ink
        else:  # transparent pixels take the colour of the opaque background
            ink = ref_ink(alpha * gray + (1.0 - alpha) * float(np.median(opaque)))
    else:
        ink = ref_ink(gray)
    top = float(ink.max())
    if top < 1e-3:
        raise ImageError("the image is blank: no digit (ink) found")
    ink = ink / top  # (H, W) in [0, 1]
    strong = ink >= _BOX_INK  # stray faint specks do not stretch the bounding box
    rows, cols = np.nonzero(strong.any(axis=1))[0], np.nonzero(strong.any(axis=0))[0]
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # crop to the ink's bounding box
    h, w = ink.shape
    scale = DIGIT_BOX / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_w, new_h) != (w, h):
        resized = Image.fromarray(ink.astype(np.float32), mode="F").resize(
            (new_w, new_h), Image.Resampling.BILINEAR
        )
        ink = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
        ink = ink / max(float(ink.max()), 1e-6)  # the strongest ink is 1 again (issue 15)
    mass = float(ink.sum())
    ys, xs = np.indices(ink.shape)
    cy, cx = float((ink * ys).sum()) / mass, float((ink * xs).sum()) / mass
    # Integer shift putting the centre of mass at (14, 14), kept inside the 28x28 field.
    top_y = int(np.clip(round(DIGIT_CENTRE - cy), 0, DIGIT_SIZE - new_h))
    left_x = int(np.clip(round(DIGIT_CENTRE - cx), 0, DIGIT_SIZE - new_w))
    out = np.zeros((DIGIT_SIZE, DIGIT_SIZE), dtype=np.float32)
    out[top_y : top_y + new_h, left_x : left_x + new_w] = ink
    return ref_to_255ths(out)[None]  # (1, 28, 28)


# --- the comparison ----------------------------------------------------------------------------


def same(image: Image.Image) -> None:
    data = io.BytesIO()
    image.save(data, format="PNG")
    decoded = decode_image(data.getvalue())
    try:
        want = reference_preprocess_digit(decoded.copy())
    except ImageError:
        with pytest.raises(ImageError):
            preprocess_digit(decoded)
        return
    got = preprocess_digit(decoded)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # bit for bit


def test_mnist_digits_both_polarities_and_as_rgb():
    for digit in mnist_test_digits(300):
        same(Image.fromarray(digit))
        same(Image.fromarray(255 - digit))
        same(Image.fromarray(255 - digit).convert("RGB"))


@pytest.mark.parametrize("seed", range(40))
def test_random_sketches_of_every_mode(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(9, 120, size=2))
    paper = rng.normal(200, rng.uniform(0, 30), size=(h, w))
    y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
    paper[y0 : y0 + h // 3, x0 : x0 + max(1, w // 6)] = rng.uniform(0, 80)
    gray = np.clip(paper, 0, 255).astype(np.uint8)
    image = Image.fromarray(gray)
    for mode in ("L", "RGB", "P", "LA", "I;16"):
        same(image.convert(mode) if mode != "I;16" else image.convert("I").convert("I;16"))
    alpha = np.where(gray < 128, 255, 0).astype(np.uint8)  # ink drawn on transparency
    same(Image.fromarray(np.dstack([gray, gray, gray, alpha]), "RGBA"))
    same(Image.fromarray(np.full((h, w), int(rng.integers(0, 256)), np.uint8)))  # blank


@pytest.mark.parametrize("seed", range(8))
def test_colour_photos_with_and_without_alpha(seed):
    rng = np.random.default_rng(100 + seed)
    h, w = (int(v) for v in rng.integers(20, 200, size=2))
    rgb = rng.normal(rng.uniform(120, 230, 3), rng.uniform(1, 25), size=(h, w, 3))
    rgb[h // 4 : h // 2, w // 3 : w // 3 + max(1, w // 8)] = rng.uniform(0, 90, 3)  # a stroke
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    same(Image.fromarray(rgb, "RGB"))
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=85)
    same(decode_image(buf.getvalue()))
    alpha = rng.integers(0, 256, size=(h, w, 1)).astype(np.uint8)
    rgba = Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA")
    same(rgba)
    for image in (Image.fromarray(rgb, "RGB"), rgba):  # the gray itself, before any rounding
        got, got_alpha = _gray(image)
        want_rgb, want_alpha = image_to_float(image)
        assert np.array_equal(got.view(np.uint32), ref_luma(want_rgb).view(np.uint32))
        if want_alpha is not None:
            assert np.array_equal(got_alpha.view(np.uint32), want_alpha.view(np.uint32))


def test_large_images_are_shrunk_the_same_way():
    rng = np.random.default_rng(7)
    big = np.full((_WORK_SIDE + 300, _WORK_SIDE // 2), 255, np.uint8)
    big[400:900, 100:160] = rng.integers(0, 60, size=(500, 60))
    same(Image.fromarray(big))


def test_quartiles_are_numpys_percentiles():
    rng = np.random.default_rng(3)
    for n in [*range(1, 40), 112, 113, 400, 1001]:
        for values in (rng.random(n), rng.integers(0, 4, n) / 3.0, rng.normal(size=n) * 1e3):
            x = values.astype(np.float32)
            want = np.percentile(x, [25, 50, 75])
            got = _quartiles(x)
            assert [float(v) for v in want] == list(got), (n, x)
