"""The common multipart/form-data upload, split without the general parser (for the read
stage, client/serving/read.py).

A /recognize request is nearly always one well-formed form of a few file parts. Starlette's
`MultiPartParser` (python-multipart's callback parser and a spooled temporary file per file)
cost more of /recognize's own time for a digit than the digit recipe (a cProfile of the route
under load). `file_parts` splits such a body at its boundary with `bytes.find` instead and
returns what the general parser would return for it: per part, the field name and filename
(decoded as Starlette decodes them) and the content.

Anything it does not recognise as that simple case (a part without a filename, a header it
does not know, a missing or repeated disposition parameter, a body not framed exactly by the
boundary, more parts than allowed, a preamble) gives None, and the caller runs the general
parser, whose answers and error messages then stay the only ones.
"""

from __future__ import annotations

import re

from python_multipart.multipart import parse_options_header

__all__ = ["file_parts"]

_KNOWN_HEADERS = (b"content-disposition", b"content-type")
# The forms every HTTP client sends, read by a regular expression: the general header parser
# was the fast path's largest cost. Anything else (quoting, escapes, other parameters)
# goes through python-multipart's `parse_options_header`, as the general parser does.
_PLAIN_TYPE = re.compile(r"multipart/form-data;\s*boundary=([0-9A-Za-z'()+_,./:=?-]{1,70})", re.I)
_PLAIN_DISPOSITION = re.compile(rb'form-data; name="([^"\\]*)"; filename="([^"\\]*)"')


def file_parts(
    body: bytes, content_type: str, max_parts: int
) -> list[tuple[str, str, bytes]] | None:
    """[(field name, filename, content)] of a simple multipart body, or None (see module)."""
    plain = _PLAIN_TYPE.fullmatch(content_type)
    boundary = (
        plain.group(1).encode() if plain else parse_options_header(content_type)[1].get(b"boundary")
    )
    if not boundary:
        return None
    delimiter = b"\r\n--" + boundary
    first = b"--" + boundary + b"\r\n"
    if not body.startswith(first):
        return None
    parts: list[tuple[str, str, bytes]] = []
    start = len(first)
    while True:
        end = body.find(delimiter, start)
        if end < 0 or len(parts) >= max_parts:
            return None
        part = _file_part(body, start, end)
        if part is None:
            return None
        parts.append(part)
        after = end + len(delimiter)
        tail = body[after : after + 2]
        if tail == b"--":  # the close delimiter: only an empty epilogue or CRLF may follow
            return parts if body[after + 2 :] in (b"", b"\r\n") else None
        if tail != b"\r\n":
            return None
        start = after + 2


def _file_part(body: bytes, start: int, end: int) -> tuple[str, str, bytes] | None:
    head_end = body.find(b"\r\n\r\n", start, end)
    if head_end < 0:
        return None
    disposition = None
    for line in body[start:head_end].split(b"\r\n"):
        name, colon, value = line.partition(b":")
        name = name.strip().lower()
        if not colon or name not in _KNOWN_HEADERS:
            return None
        if name == b"content-disposition":
            if disposition is not None:
                return None
            disposition = value.strip()
    if disposition is None or disposition.count(b"name=") > 2:
        return None
    plain = _PLAIN_DISPOSITION.fullmatch(disposition)
    if plain:
        field, filename = plain.group(1), plain.group(2)
    else:
        kind, options = parse_options_header(disposition)
        field, filename = options.get(b"name"), options.get(b"filename")
        if kind != b"form-data" or field is None or filename is None:
            return None
    return _decode(field), _decode(filename), body[head_end + 4 : end]


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # as Starlette's parser decodes
        return raw.decode("latin-1")
