"""Stage 3, decode: a request's encoded images into the network's input batch.

`open_uploads` reads only the images' headers and refuses a request whose images would decode
to more than the pixel budgets: what a request will cost is known before a pixel is decoded,
so the run stage (client/serving/run.py) can choose where it runs. `decode_images` then
decodes one image at a time and preprocesses each by the bundle's own recipe
(shared/image/) into float32 (N, C, H, W); `decode_timed` is the same with the
timings /recognize reports. The Open Inference Protocol's `images` input uses them too
(client/oip_model.py), and so does an inference process (client/serving/children.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from client.manager import LoadedBundle
from shared.errors import ImageError, ImageTooLargeError
from shared.image import load_image_for_recipe, open_image, preprocess

__all__ = ["OpenedUploads", "open_uploads", "decode_images", "decode_timed"]

T = TypeVar("T")


@dataclass
class OpenedUploads:
    """A request's images with only their headers read: what decoding them will cost."""

    names: list[str]
    images: list[Image.Image]  # lazy: pixels not decoded yet
    header_s: float

    @property
    def pixels(self) -> int:
        return sum(image.size[0] * image.size[1] for image in self.images)

    def close(self) -> None:
        for image in self.images:
            image.close()


def open_uploads(
    uploads: list[tuple[str, bytes]], *, max_pixels: int, max_request_pixels: int | None = None
) -> OpenedUploads:
    """Read every image's header (each under `max_pixels`) and refuse the request (413) when
    their pixels together exceed `max_request_pixels`. Cheap (no pixel is decoded), so the
    event loop may call it."""
    t0 = time.perf_counter()
    images: list[Image.Image] = []
    try:
        for index, (name, data) in enumerate(uploads):
            images.append(_labelled(index, name, open_image, data, max_pixels=max_pixels))
    except ImageError:
        for image in images:
            image.close()
        raise
    opened = OpenedUploads([name for name, _ in uploads], images, time.perf_counter() - t0)
    if max_request_pixels is not None and opened.pixels > max_request_pixels:
        opened.close()
        raise ImageTooLargeError(
            f"the {len(images)} images have {opened.pixels} pixels in all; the limit per "
            f"request is {max_request_pixels} (send fewer or smaller images per request)"
        )
    return opened


def decode_images(loaded: LoadedBundle, opened: OpenedUploads) -> tuple[np.ndarray, float]:
    """The network's input for every image of `opened`: float32 (N, C, H, W), and the seconds
    spent decoding (header reads included).

    One image at a time is decoded, preprocessed to the network's small input and closed, so
    a request holds at most one decoded image (a 4000x4000 RGBA one is 64 MB).
    """
    arrays = []
    decode_s = opened.header_s
    try:
        for index, (name, image) in enumerate(zip(opened.names, opened.images, strict=True)):
            t = time.perf_counter()
            _labelled(index, name, load_image_for_recipe, image, loaded.preprocess)
            decode_s += time.perf_counter() - t
            arrays.append(_labelled(index, name, preprocess, image, loaded.preprocess))
            image.close()  # frees the decoded pixels now, not when the request ends
    finally:
        opened.close()
    return np.stack(arrays), decode_s


def decode_timed(
    loaded: LoadedBundle, opened: OpenedUploads
) -> tuple[np.ndarray, dict[str, float]]:
    """`decode_images` with /recognize's timings: the batch and {"decode", "preprocess"} ms."""
    start = time.perf_counter()
    batch, decode_s = decode_images(loaded, opened)
    spent = time.perf_counter() - start + opened.header_s
    return batch, {
        "decode": round(decode_s * 1e3, 3),
        "preprocess": round((spent - decode_s) * 1e3, 3),
    }


def _labelled(index: int, name: str, step: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one per-image step; its ImageError names the image (index and file name)."""
    try:
        return step(*args, **kwargs)
    except ImageError as exc:
        raise type(exc)(f"image {index} ({name}): {exc}") from exc
