"""Turning a /recognize request into images, and images into answers.

`read_uploads` reads the body under the byte limit (Content-Length first, then while reading)
and returns (name, bytes) per image: the `file` / `files` multipart fields, or one raw body of
an `image/*` content type. `open_uploads` reads only their headers and refuses a request whose
images would decode to more than the pixel budget. `batch_of` decodes them one at a time and
preprocesses each (the bundle's own recipe) into the network's input batch (the Open Inference
Protocol route uses it too); `answer` builds /recognize's answer from the network's labels and
probabilities. The route runs the network between them, through the app's `Batcher`
(client/batching.py), or hands the request's bytes to an inference process
(client/inference_process.py), which runs `open_uploads` and `prepared` there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from client.manager import LoadedBundle
from client.multipart import file_parts
from shared.errors import (
    BodyTimeoutError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
    UploadError,
)
from shared.image import load_for, open_image, preprocess

__all__ = [
    "read_uploads",
    "open_uploads",
    "batch_of",
    "prepared",
    "answer",
    "OpenedUploads",
]

IMAGE_FIELDS = ("file", "files")
T = TypeVar("T")


async def read_body(request: Request, max_bytes: int, timeout_s: float | None = None) -> bytes:
    """The body, under `max_bytes`, arrived within `timeout_s` (uvicorn has no read timeout:
    a caller that stops sending would hold its connection and place in line for ever)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise ImageTooLargeError(f"the request body is {length} bytes; the limit is {max_bytes}")
    chunks, total = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                total += len(chunk)
                if total > max_bytes:
                    raise ImageTooLargeError(f"the request body is over the {max_bytes}-byte limit")
                chunks.append(chunk)
    except TimeoutError as exc:
        raise BodyTimeoutError(
            f"the request body did not arrive within {timeout_s:g} s ({total} bytes came)"
        ) from exc
    except ClientDisconnect as exc:  # nobody reads the answer; no traceback in the log
        raise UploadError("the caller disconnected before its request body arrived") from exc
    return b"".join(chunks)


async def read_uploads(
    request: Request, *, max_bytes: int, max_images: int, timeout_s: float | None = None
) -> list[tuple[str, bytes]]:
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media.startswith("image/"):
        body = await read_body(request, max_bytes, timeout_s)
        if not body:
            raise ImageError("the upload is empty: no image bytes were received")
        return [("body", body)]
    if media != "multipart/form-data":
        raise UnsupportedImageError(
            f"send images as multipart/form-data (fields 'file' or 'files') or as a raw body "
            f"with an image/* content type, not {media or 'no content type'!r}"
        )
    body = await read_body(request, max_bytes, timeout_s)
    simple = file_parts(body, content_type, max_parts=max_images)
    if simple is not None:  # the common case, split without the general parser
        for field, _, _ in simple:
            if field not in IMAGE_FIELDS:
                raise UploadError(f"unexpected field {field!r}: send images in 'file' or 'files'")
        return [(filename or field, data) for field, filename, data in simple]

    async def stream():
        yield body
        yield b""

    parser = MultiPartParser(
        request.headers, stream(), max_files=max_images + 1, max_fields=max_images + 16
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            raise ImageTooLargeError(f"too many images: at most {max_images} per request") from exc
        raise UploadError(f"malformed multipart body: {exc.message}") from exc
    try:
        uploads: list[tuple[str, bytes]] = []
        for key, value in form.multi_items():
            if key not in IMAGE_FIELDS:
                raise UploadError(f"unexpected field {key!r}: send images in 'file' or 'files'")
            if not isinstance(value, UploadFile):
                raise UploadError(f"field {key!r} must be a file upload, not a text value")
            uploads.append((value.filename or key, await value.read()))
    finally:
        await form.close()
    if not uploads:
        raise UploadError("no image: send one in the 'file' field or several in 'files'")
    if len(uploads) > max_images:
        raise ImageTooLargeError(f"too many images: {len(uploads)}, at most {max_images}")
    return uploads


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
    their pixels together exceed `max_request_pixels`: what a request may cost is known
    before any pixel is decoded. Cheap (no pixel is decoded), so the event loop may call it."""
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


def batch_of(loaded: LoadedBundle, opened: OpenedUploads) -> tuple[np.ndarray, float]:
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
            _labelled(index, name, load_for, image, loaded.preprocess)
            decode_s += time.perf_counter() - t
            arrays.append(_labelled(index, name, preprocess, image, loaded.preprocess))
            image.close()  # frees the decoded pixels now, not when the request ends
    finally:
        opened.close()
    return np.stack(arrays), decode_s


def answer(
    loaded: LoadedBundle,
    names: list[str],
    labels: np.ndarray,
    probs: np.ndarray,
    timings_ms: dict[str, float],
) -> dict[str, Any]:
    """/recognize's answer: each image's label, class name, confidence and probabilities."""
    classes = loaded.network.class_names
    bundle = loaded.bundle.id
    # Python floats once (tolist), not one numpy scalar per probability: building the answer
    # cost as much as the network for a digit
    rows = probs.tolist()
    results = [
        {
            "index": i,
            "filename": names[i],
            "label": label,
            "class_name": classes[label],
            "confidence": rows[i][label],
            "probabilities": [round(p, 6) for p in rows[i]],
            "bundle_id": bundle,
        }
        for i, label in enumerate(labels.tolist())
    ]
    return {
        "bundle_id": bundle,
        "class_names": classes,
        "results": results,
        "timings_ms": timings_ms,
    }


def prepared(loaded: LoadedBundle, opened: OpenedUploads) -> tuple[np.ndarray, dict[str, float]]:
    """`batch_of` with its timings: the network's input and {"decode", "preprocess"} ms."""
    start = time.perf_counter()
    batch, decode_s = batch_of(loaded, opened)
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
