import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import shared.image.preprocessing as pp
from shared.errors import ConfigError, ImageError, ImageTooLargeError, UnsupportedImageError
from shared.image import (
    check_spec,
    decode_image,
    output_shape,
    preprocess,
    preprocess_bytes,
    preprocess_digit,
    preprocess_photo,
)
from tests.samples import mnist_test_digits

REPO = Path(__file__).resolve().parents[2]


def encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def digit_of(image: Image.Image, fmt: str = "PNG") -> np.ndarray:
    out = preprocess_digit(decode_image(encode(image, fmt)))
    assert out.shape == (1, 28, 28) and out.dtype == np.float32
    return out[0]


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return mnist_test_digits(40)


def test_public_api_is_declared():
    for name in pp.__all__:
        assert hasattr(pp, name), name


def test_centred_mnist_digit_is_unchanged(digits):
    for a in digits:
        assert np.abs(digit_of(Image.fromarray(a)) - a / 255.0).mean() < 0.005


@pytest.mark.parametrize("variant", ["inverted", "rgba", "off_centre", "enlarged_jpeg"])
def test_variants_preprocess_like_the_original(digits, variant):
    rng = np.random.default_rng(0)
    diffs = []
    for a in digits:
        if variant == "inverted":  # light-on-dark vs dark-on-light
            image = Image.fromarray(255 - a)
        elif variant == "rgba":  # black ink on a transparent canvas
            rgba = np.zeros((28, 28, 4), np.uint8)
            rgba[..., 3] = a
            image = Image.fromarray(rgba, "RGBA")
        elif variant == "off_centre":  # grey ink on a light grey page, anywhere on it
            page = np.full((90, 70), 230, np.uint8)
            y, x = rng.integers(0, 62), rng.integers(0, 42)
            page[y : y + 28, x : x + 28] -= (a * 0.8).astype(np.uint8)
            image = Image.fromarray(page)
        else:  # 3x larger, noisy, JPEG, RGB
            big = np.asarray(Image.fromarray(a).resize((84, 84), Image.Resampling.BICUBIC))
            page = 255 - big * 0.7 - rng.normal(0, 4, big.shape)
            image = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).convert("RGB")
        out = digit_of(image, "JPEG" if variant == "enlarged_jpeg" else "PNG")
        diffs.append(np.abs(out - a / 255.0).mean())
    assert np.mean(diffs) < (0.05 if variant == "enlarged_jpeg" else 0.005)


def test_digit_is_fitted_and_centred_by_mass():
    # a 10x40 bar, far from the centre of a 200x100 page
    page = np.full((200, 100), 255, np.uint8)
    page[5:45, 80:90] = 0
    out = preprocess_digit(Image.fromarray(page))[0]
    rows, cols = np.nonzero(out.any(1))[0], np.nonzero(out.any(0))[0]
    assert rows[-1] - rows[0] + 1 == 20 and cols[-1] - cols[0] + 1 == 5
    ys, xs = np.indices(out.shape)
    assert abs((out * ys).sum() / out.sum() - 14) <= 0.5
    assert abs((out * xs).sum() / out.sum() - 14) <= 0.5
    assert out.max() == 1.0 and np.allclose(out * 255, np.round(out * 255))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP", "PPM"])
def test_supported_formats_decode(digits, fmt):
    image = decode_image(encode(Image.fromarray(255 - digits[0]), fmt))
    assert image.size == (28, 28)
    assert np.abs(preprocess_digit(image)[0] - digits[0] / 255.0).mean() < 0.05


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "CMYK"])
def test_modes_give_the_same_digit(digits, mode):
    a = 255 - digits[1]  # dark ink on white
    if mode == "I;16":
        image = Image.fromarray(a.astype(np.uint16) * 257)
    elif mode == "I":
        image = Image.fromarray(a.astype(np.int32))
    else:
        image = Image.fromarray(a).convert(mode)
    out = preprocess_digit(image)[0]
    ref = preprocess_digit(Image.fromarray(a))[0]
    tolerance = 0.06 if mode in ("1", "P") else 0.01
    assert np.abs(out - ref).mean() < tolerance


def test_gif_reads_the_first_frame(digits):
    frames = [Image.fromarray(255 - digits[i]) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = preprocess_digit(decode_image(buf.getvalue()))[0]
    assert np.abs(out - digits[0] / 255.0).mean() < 0.01


def test_blank_and_transparent_images_are_refused():
    with pytest.raises(ImageError, match="blank"):
        preprocess_digit(Image.new("L", (30, 30), 200))
    with pytest.raises(ImageError, match="transparent"):
        preprocess_digit(Image.new("RGBA", (30, 30), (0, 0, 0, 0)))


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's shape)."""
    data = encode(Image.new("L", (1, 1)))
    ihdr = struct.pack(">II", width, height) + data[24:29]
    chunk = b"IHDR" + ihdr
    return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def test_decode_errors_are_image_errors():
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")
    with pytest.raises(UnsupportedImageError):
        decode_image(b"%PDF-1.4 definitely not an image")
    with pytest.raises(UnsupportedImageError):  # a real image, but not a supported format
        decode_image(encode(Image.new("L", (8, 8)), "TIFF"))
    png = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)))
    with pytest.raises(ImageError, match="truncated"):
        decode_image(png[: len(png) // 2])
    with pytest.raises(ImageTooLargeError):
        decode_image(encode(Image.new("L", (100, 100))), max_pixels=9999)
    with pytest.raises(ImageTooLargeError):  # beyond Pillow's own bomb limit
        decode_image(png_claiming_size(60000, 60000))
    with pytest.raises(ImageTooLargeError):  # beyond ours, decoded lazily: no memory spent
        decode_image(png_claiming_size(5000, 5000))


def test_photo_resizes_the_shorter_side_and_centre_crops():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (60, 90, 3), np.uint8)
    out = preprocess_photo(Image.fromarray(rgb), resize=30, crop=24)
    assert out.shape == (3, 24, 24) and out.dtype == np.float32
    expected = Image.fromarray(rgb).resize((45, 30), Image.Resampling.BILINEAR)
    expected = np.asarray(expected.crop((10, 3, 34, 27)), np.float32) / 255.0
    np.testing.assert_array_equal(out, expected.transpose(2, 0, 1))


def test_photo_composites_alpha_on_white_and_accepts_gray():
    rgba = np.zeros((32, 32, 4), np.uint8)  # fully transparent black
    out = preprocess(Image.fromarray(rgba, "RGBA"), {"kind": "photo", "resize": 16, "crop": 16})
    assert np.all(out == 1.0)
    gray = preprocess(Image.new("L", (40, 20), 51), {"kind": "photo", "resize": 10, "crop": 8})
    assert gray.shape == (3, 8, 8) and np.allclose(gray, 0.2)


def test_specs_are_checked():
    assert output_shape({"kind": "digit"}) == (1, 28, 28)
    assert output_shape({"kind": "photo", "resize": 72, "crop": 64}) == (3, 64, 64)
    for bad in [None, {}, {"kind": "fft"}, {"kind": "photo", "resize": 10, "crop": 20},
                {"kind": "photo", "resize": "10", "crop": 8}]:  # fmt: skip
        with pytest.raises(ConfigError):
            check_spec(bad)


def test_preprocess_bytes_matches_decode_then_preprocess(digits):
    data = encode(Image.fromarray(digits[2]))
    expected = preprocess(decode_image(data), {"kind": "digit"})
    np.testing.assert_array_equal(preprocess_bytes(data, {"kind": "digit"}), expected)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "I;16", "CMYK"])
def test_photo_accepts_every_mode(mode):
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, (20, 30), np.uint8)
    if mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 257)
    else:
        image = Image.fromarray(gray).convert(mode)
    out = preprocess_photo(image, resize=10, crop=10)
    ref = preprocess_photo(Image.fromarray(gray).convert("RGB"), resize=10, crop=10)
    assert out.shape == (3, 10, 10)
    assert np.abs(out - ref).max() <= (0.6 if mode == "P" else 2 / 255)
