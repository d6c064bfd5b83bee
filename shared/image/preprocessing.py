"""Image decoding and the two preprocessing recipes a bundle can name (`input.preprocess`).

This is the single source of truth: the client runs it on uploads and the server's data
loaders run it on image files, so a network sees the same arrays in training and in service.

    decode_image(bytes, max_pixels=...)  -> PIL image (first frame, fully loaded)
    open_image / load_image              the same in two steps: header (size checked), pixels
    load_image_for_recipe(image, spec)   load_image, at a JPEG's DCT scale when the recipe drafts
    preprocess(image, spec)              -> float32 (C, H, W) in [0, 1]

`digit` ({"kind": "digit"}) rebuilds MNIST's layout: gray, ink found on either polarity (dark
on light or light on dark; transparent pixels are background), cropped to the ink's bounding
box, scaled to fit 20x20 keeping the aspect ratio, placed in 28x28 with its centre of mass at
pixel (14, 14), the strongest ink = 1.0 (after the scaling too). `photo` ({"kind": "photo",
"resize": S, "crop": C}) is RGB with alpha composited on white, shorter side resized to S
(bilinear), centre crop C x C, / 255; with `"draft": true` a JPEG is first decoded at the
smallest DCT scale whose shorter side still reaches S (`load_image_for_recipe`; new photo
bundles say so).

Every output value is a multiple of 1/255, so `round(x * 255)` stores it in uint8 losslessly.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import numpy as np
from PIL import Image

from shared.errors import ConfigError, ImageError, ImageTooLargeError, UnsupportedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_FORMATS",
    "decode_image",
    "open_image",
    "load_image",
    "load_image_for_recipe",
    "check_spec",
    "output_shape",
    "preprocess",
    "preprocess_bytes",
    "preprocess_digit",
    "preprocess_photo",
    "image_to_float",
]

DEFAULT_MAX_PIXELS = 16_000_000  # a 4000x4000 photo; larger uploads are refused
# Pillow format names; PGM/PPM/PBM are all "PPM".
SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "PPM")

DIGIT_SIZE, DIGIT_BOX, DIGIT_CENTRE = 28, 20, 14.0
_BOX_INK = 0.1  # ink (relative to the strongest) that counts for the bounding box
_WORK_SIDE = 1024
_HIGH_DEPTH = (
    "I;16",
    "I;16L",
    "I;16B",
    "I;16N",
    "I",
    "F",
)  # digit images are shrunk to this side first; the result is 20x20 anyway


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read only the header of `data`: a lazy PIL image whose pixels are not decoded yet, its
    size checked against `max_pixels`. A caller holding several uploads can so learn what all
    of them would cost before it decodes any.

    Raises UnsupportedImageError (not an image / unsupported format), ImageTooLargeError
    (more than `max_pixels` pixels) or ImageError (empty, or a header that cannot be read).
    """
    if not data:
        raise ImageError("the upload is empty: no image bytes were received")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"the image is too large (decompression bomb): {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise UnsupportedImageError(
            "the data is not an image in a supported format "
            f"({', '.join(SUPPORTED_FORMATS)}; PGM is read as PPM)"
        ) from exc
    except Exception as exc:  # a malformed header can raise anything from a decoder
        raise ImageError(f"the image header cannot be read: {exc}") from exc
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image has {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    return image


def load_image(image: Image.Image) -> Image.Image:
    """Decode the pixels of an `open_image` result (first frame); ImageError when corrupt."""
    try:
        image.seek(0)
        image.load()
    except Exception as exc:  # truncated data: OSError, SyntaxError, EOFError, ValueError...
        raise ImageError(f"the image is truncated or corrupt: {exc}") from exc
    return image


def load_image_for_recipe(image: Image.Image, spec: dict) -> Image.Image:
    """`load_image` for the recipe `spec`: a photo recipe with `"draft": true` first asks a JPEG
    for its smallest DCT scale (1/2, 1/4 or 1/8, libjpeg's scaled decoding, Pillow's
    `Image.draft`) whose shorter side still reaches `resize`; the bilinear resize then starts
    from that: less to decode and less to resize (a 300x300 JPEG for a 64-pixel recipe decodes
    at 75x75; its timings: bench/results/http_profile.md)."""
    if spec.get("draft") and spec.get("kind") == "photo" and image.format == "JPEG":
        try:  # at least the size preprocess_photo resizes to
            image.draft(None, _resized(image.size, spec["resize"]))
        except Exception as exc:  # a header the scaled decoder cannot use
            raise ImageError(f"the image cannot be decoded: {exc}") from exc
    return load_image(image)


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, spec: dict | None = None
) -> Image.Image:
    """Decode `data` (first frame of animations) into a loaded PIL image: `open_image` (the
    size checked from the header before decoding) then `load_image`, or
    `load_image_for_recipe` when a recipe `spec` is given."""
    image = open_image(data, max_pixels=max_pixels)
    return load_image(image) if spec is None else load_image_for_recipe(image, check_spec(spec))


def image_to_float(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any PIL mode -> (rgb float32 (H, W, 3) in [0, 1], alpha float32 (H, W) or None)."""
    mode = image.mode
    if mode in _HIGH_DEPTH:
        g = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or g.max(initial=0) > 255 else 255.0
        if mode == "F" and g.max(initial=0) <= 1.0:
            top = 1.0
        g = np.clip(g / top, 0.0, 1.0).astype(np.float32)
        return np.repeat(g[:, :, None], 3, axis=2), None
    if mode == "P":
        mode = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(mode)
    elif mode in ("PA", "LA", "La"):
        image, mode = image.convert("RGBA"), "RGBA"
    elif mode not in ("RGB", "RGBA"):
        image, mode = image.convert("RGB"), "RGB"
    arr = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3 or 4)
    if mode == "RGBA":
        return arr[:, :, :3], arr[:, :, 3]
    return arr, None


def check_spec(spec: Any) -> dict:
    """Validate a manifest `input.preprocess` spec; ConfigError when it cannot be used."""
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ConfigError(f"a preprocessing spec must be an object with a 'kind': {spec!r}")
    kind = spec["kind"]
    if kind == "digit":
        return {"kind": "digit"}
    if kind == "photo":
        resize, crop = spec.get("resize"), spec.get("crop")
        for name, value in (("resize", resize), ("crop", crop)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
                raise ConfigError(f"photo preprocessing needs an integer {name} in 1..4096")
        assert isinstance(resize, int) and isinstance(crop, int)
        if crop > resize:
            raise ConfigError(f"photo crop ({crop}) cannot exceed resize ({resize})")
        draft = spec.get("draft", False)
        if not isinstance(draft, bool):
            raise ConfigError(f"photo preprocessing's draft must be true or false, not {draft!r}")
        out: dict[str, Any] = {"kind": "photo", "resize": resize, "crop": crop}
        if draft:  # bundles made before the option have no key: they decode in full
            out["draft"] = True
        return out
    raise ConfigError(f"unknown preprocessing kind {kind!r} (known: digit, photo)")


def output_shape(spec: dict) -> tuple[int, int, int]:
    """(C, H, W) that `preprocess(image, spec)` returns."""
    spec = check_spec(spec)
    if spec["kind"] == "digit":
        return (1, DIGIT_SIZE, DIGIT_SIZE)
    return (3, spec["crop"], spec["crop"])


def preprocess(image: Image.Image, spec: dict) -> np.ndarray:
    """Apply the bundle's preprocessing; float32 (C, H, W) in [0, 1]."""
    spec = check_spec(spec)
    if spec["kind"] == "digit":
        return preprocess_digit(image)
    return preprocess_photo(image, resize=spec["resize"], crop=spec["crop"])


def preprocess_bytes(data: bytes, spec: dict, *, max_pixels: int = DEFAULT_MAX_PIXELS):
    """decode_image + preprocess, for data loaders reading image files."""
    return preprocess(decode_image(data, max_pixels=max_pixels, spec=spec), spec)


# The digit recipe runs once per uploaded image: its arrays are small (28x28 for MNIST), so
# numpy's per-call overhead is most of its cost. Hence np.maximum / np.minimum where np.clip
# would dispatch to them anyway, a median by np.partition, quartiles from one sort, and mode
# "L" read as one channel; each gives the same floats as the straightforward form
# (tests/shared/test_preprocess_exact.py compares them bit for bit).


def _to_255ths(x: np.ndarray) -> np.ndarray:
    x = np.minimum(np.maximum(x, 0.0), 1.0)  # np.clip(x, 0, 1)
    return (np.round(x * 255.0) / 255.0).astype(np.float32)


def _luma(rgb: np.ndarray) -> np.ndarray:
    # ITU-R 601-2, the weights of PIL's "L" conversion
    return rgb[:, :, 0] * 0.299 + rgb[:, :, 1] * 0.587 + rgb[:, :, 2] * 0.114


def _gray(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(gray float32 (H, W) = _luma of the RGB image, alpha (H, W) or None)."""
    if image.mode == "L":  # R = G = B: the same products, looked up per 8-bit value
        return _L_GRAY[np.asarray(image)], None
    rgb, alpha = image_to_float(image)
    return _luma(rgb), alpha


# The gray of each 8-bit "L" value: the float32 products `_gray` would compute per pixel.
_L_LEVELS = np.arange(256, dtype=np.float32) / 255.0
_L_GRAY = _L_LEVELS * 0.299 + _L_LEVELS * 0.587 + _L_LEVELS * 0.114  # (256,) float32
# np.indices of the largest ink box (DIGIT_BOX square), sliced per digit
_ROWS, _COLS = np.indices((DIGIT_BOX, DIGIT_BOX))


def _median(x: np.ndarray) -> float:
    """np.median of a 1-D float array without NaNs (the same float: the middle value, or the
    two middle values' mean in the array's float type)."""
    n = len(x)
    k = n // 2
    if n % 2:
        return float(np.partition(x, k)[k])
    part = np.partition(x, [k - 1, k])
    return float((part[k - 1] + part[k]) / 2)


def _quartiles(x: np.ndarray) -> tuple[float, float, float]:
    """np.percentile(x, [25, 50, 75]) of a 1-D float32 array without NaNs, to the same float64
    values: numpy's linear method, `a + (b - a) * g` below g = 0.5, else `b - (b - a) * (1 - g)`,
    with `b - a` taken in float32 as numpy does."""
    ordered = np.sort(x)
    n = len(ordered)
    out = []
    for q in (0.25, 0.5, 0.75):
        at = (n - 1) * q
        below = math.floor(at)
        if below >= n - 1:
            out.append(float(ordered[-1]))
            continue
        gamma = at - below
        a, b = ordered[below], ordered[below + 1]
        step = float(b - a)  # float32 difference, as numpy's _lerp
        out.append(float(b) - step * (1 - gamma) if gamma >= 0.5 else float(a) + step * gamma)
    return out[0], out[1], out[2]


def _ink(gray: np.ndarray) -> np.ndarray:
    """(H, W) gray -> (H, W) ink >= 0, whichever polarity; the border is background."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = _median(border)
    # Ink pulls the mean away from the background: below it for dark ink on light paper.
    ink = background - gray if float(gray.mean()) < background else gray - background
    ink = np.maximum(ink, 0.0)
    # Paper texture / sensor noise: the ink the border shows is not ink.
    edge = np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]])
    q25, q50, q75 = _quartiles(edge)  # robust to a digit touching the border
    floor = min(float(q50 + 6.0 * (q75 - q25)), 0.5 * float(ink.max()))
    return np.maximum(ink - floor, 0.0)


def preprocess_digit(image: Image.Image) -> np.ndarray:
    """MNIST layout: float32 (1, 28, 28), ink = 1, centre of mass at (14, 14)."""
    if max(image.size) > _WORK_SIDE:
        image = image.copy()
        image.thumbnail((_WORK_SIDE, _WORK_SIDE), Image.Resampling.BILINEAR)
    gray, alpha = _gray(image)  # (H, W)
    if alpha is not None and float(alpha.min()) < 0.99:
        opaque = gray[alpha > 0.5]
        if opaque.size == 0:
            raise ImageError("the image is fully transparent: no digit found")
        if float(opaque.std()) < 0.05:
            ink = alpha  # one colour drawn on transparency: the opacity is the ink
        else:  # transparent pixels take the colour of the opaque background
            ink = _ink(alpha * gray + (1.0 - alpha) * float(np.median(opaque)))
    else:
        ink = _ink(gray)
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
        ink = np.minimum(np.maximum(np.asarray(resized, dtype=np.float32), 0.0), 1.0)
        # the strongest ink is 1 again: a thin pen line shrunk from a large photo is not faint
        ink = ink / max(float(ink.max()), 1e-6)
    mass = float(ink.sum())
    h, w = ink.shape  # at most DIGIT_BOX square: the scaling above fits it in
    ys, xs = (_ROWS[:h, :w], _COLS[:h, :w]) if max(h, w) <= DIGIT_BOX else np.indices((h, w))
    cy, cx = float((ink * ys).sum()) / mass, float((ink * xs).sum()) / mass
    # Integer shift putting the centre of mass at (14, 14), kept inside the 28x28 field.
    top_y = min(max(round(DIGIT_CENTRE - cy), 0), DIGIT_SIZE - new_h)
    left_x = min(max(round(DIGIT_CENTRE - cx), 0), DIGIT_SIZE - new_w)
    out = np.zeros((DIGIT_SIZE, DIGIT_SIZE), dtype=np.float32)
    out[top_y : top_y + new_h, left_x : left_x + new_w] = ink
    return _to_255ths(out)[None]  # (1, 28, 28)


def _rgb_on_white(image: Image.Image) -> Image.Image:
    """Any mode -> 8-bit RGB, transparency composited on white (integer math, no float copy
    of a large photo)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _HIGH_DEPTH:
        rgb, _ = image_to_float(image)
        return Image.fromarray(np.round(rgb[:, :, 0] * 255.0).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _resized(size: tuple[int, int], resize: int) -> tuple[int, int]:
    """(w, h) with the shorter side scaled to `resize`, the photo recipe's bilinear target."""
    w, h = size
    short = min(w, h)
    return max(resize, round(w * resize / short)), max(resize, round(h * resize / short))


def preprocess_photo(image: Image.Image, *, resize: int, crop: int) -> np.ndarray:
    """RGB on white, shorter side -> `resize` (bilinear), centre crop -> float32 (3, crop, crop)."""
    image = _rgb_on_white(image)
    w, h = image.size
    new_w, new_h = _resized((w, h), resize)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = int(round((new_w - crop) / 2.0)), int(round((new_h - crop) / 2.0))
    arr = np.asarray(image.crop((left, top, left + crop, top + crop)), dtype=np.float32)
    return (arr / 255.0).transpose(2, 0, 1).copy()  # (3, crop, crop)
