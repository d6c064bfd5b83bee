"""Stage 2, read: a request's body, whole, under its limits; and /recognize's images in it.

A body must arrive
- within `max_bytes` (413: Content-Length first, then while reading),
- within `timeout_s` for the whole body (408), and
- at `min_rate` bytes/s on average once `grace_s` have passed (408): uvicorn has no read
  timeout, and a caller sending a byte every few seconds would otherwise hold its
  connection and its reading place (client/serving/admit.py) until the whole deadline.
  Apache's mod_reqtimeout keeps the same rule (`body=20,MinRate=500`).

The deadline is one timer, moved later as bytes come: by `start + grace_s + got / min_rate`
the body must have gone past `got` bytes, and never later than `start + timeout_s`.

`read_uploads` returns /recognize's images as (name, bytes): the `file` / `files` multipart
fields (split by client/serving/multipart.py, or Starlette's general parser for what that
does not recognise), or one raw body of an `image/*` content type.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from client.serving.multipart import file_parts
from shared.errors import (
    BodyTimeoutError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
    UploadError,
)

__all__ = ["BodyLimits", "Uploads", "read_body", "read_uploads", "IMAGE_FIELDS"]

IMAGE_FIELDS = ("file", "files")
Uploads = list[tuple[str, bytes]]  # (file name, encoded image) per image of a request


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_bytes: int
    timeout_s: float  # for the whole body
    min_rate: float = 0.0  # bytes/s on average after `grace_s`; 0: no minimum
    grace_s: float = 0.0


async def read_body(request: Request, limits: BodyLimits) -> bytes:
    """The whole body under `limits` (see the module): ImageTooLargeError (413),
    BodyTimeoutError (408), UploadError when the caller leaves."""
    max_bytes = limits.max_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise ImageTooLargeError(f"the request body is {length} bytes; the limit is {max_bytes}")
    loop = asyncio.get_running_loop()
    start = loop.time()
    whole = start + limits.timeout_s
    rate = limits.min_rate
    chunks, total = [], 0
    try:
        async with asyncio.timeout_at(min(whole, start + limits.grace_s) if rate else whole) as t:
            async for chunk in request.stream():
                total += len(chunk)
                if total > max_bytes:
                    raise ImageTooLargeError(f"the request body is over the {max_bytes}-byte limit")
                chunks.append(chunk)
                if rate:  # the next bytes are due by then
                    t.reschedule(min(whole, start + limits.grace_s + total / rate))
    except TimeoutError as exc:
        elapsed = loop.time() - start
        if rate and elapsed < limits.timeout_s - 0.01:  # the rate's deadline, not the whole's
            raise BodyTimeoutError(
                f"the request body came too slowly: {total} bytes in {elapsed:.1f} s; it must "
                f"arrive at {rate:g} bytes/s at least (after {limits.grace_s:g} s)"
            ) from exc
        raise BodyTimeoutError(
            f"the request body did not arrive within {limits.timeout_s:g} s ({total} bytes came)"
        ) from exc
    except ClientDisconnect as exc:  # nobody reads the answer; no traceback in the log
        raise UploadError("the caller disconnected before its request body arrived") from exc
    return b"".join(chunks)


async def read_uploads(request: Request, limits: BodyLimits, max_images: int) -> Uploads:
    """/recognize's images, at most `max_images` (413 past it); 4xx for anything else."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media.startswith("image/"):
        body = await read_body(request, limits)
        if not body:
            raise ImageError("the upload is empty: no image bytes were received")
        return [("body", body)]
    if media != "multipart/form-data":
        raise UnsupportedImageError(
            f"send images as multipart/form-data (fields 'file' or 'files') or as a raw body "
            f"with an image/* content type, not {media or 'no content type'!r}"
        )
    body = await read_body(request, limits)
    simple = file_parts(body, content_type, max_parts=max_images)
    if simple is not None:  # the common case, split without the general parser
        for field, _, _ in simple:
            if field not in IMAGE_FIELDS:
                raise UploadError(f"unexpected field {field!r}: send images in 'file' or 'files'")
        return [(filename or field, data) for field, filename, data in simple]
    return await _parse_form(request, body, max_images)


async def _parse_form(request: Request, body: bytes, max_images: int) -> Uploads:
    """Starlette's general multipart parser over a body already read."""

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
        uploads: Uploads = []
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
