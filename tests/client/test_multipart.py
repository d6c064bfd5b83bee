"""The multipart fast path (client/serving/multipart.py) returns what Starlette's general parser
returns for the simple forms it takes, and None for anything else (the general parser then
answers, with its own messages)."""

from __future__ import annotations

import httpx
import pytest
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser

from client.serving.multipart import file_parts
from tests.conftest import run_async


def encoded(files, data=None) -> tuple[bytes, str]:
    """A body and content type as httpx (the clients people use) encodes them."""
    request = httpx.Request("POST", "http://x/recognize", files=files, data=data)
    return request.read(), request.headers["content-type"]


def general(body: bytes, content_type: str) -> list[tuple[str, str | None, bytes]]:
    async def parse():
        async def stream():
            yield body
            yield b""

        headers = Headers({"content-type": content_type, "content-length": str(len(body))})
        form = await MultiPartParser(headers, stream()).parse()
        out = []
        for key, value in form.multi_items():
            assert isinstance(value, UploadFile)
            out.append((key, value.filename, await value.read()))
        await form.close()
        return out

    return run_async(parse)


@pytest.mark.parametrize(
    "files",
    [
        {"file": ("d.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3)},
        [("files", ("a.png", b"one")), ("files", ("b.jpg", b"two\r\n--x")), ("files", ("c", b""))],
        {"file": ("zahl-\u00fc.png", b"\r\n\r\n", "image/png")},
    ],
)
def test_the_fast_path_parses_as_the_general_parser_does(files):
    body, content_type = encoded(files)
    assert file_parts(body, content_type, max_parts=8) == general(body, content_type)


def boundary_of(content_type: str) -> bytes:
    return content_type.split("boundary=")[1].encode()


@pytest.mark.parametrize(
    "case",
    ["text field", "preamble", "no close", "epilogue", "extra header", "no filename", "too many"],
)
def test_anything_but_the_simple_case_goes_to_the_general_parser(case):
    body, content_type = encoded({"file": ("d.png", b"pixels")})
    b = boundary_of(content_type)
    if case == "text field":
        body, content_type = encoded({"file": ("d.png", b"pixels")}, data={"note": "hi"})
    elif case == "preamble":
        body = b"hello\r\n" + body
    elif case == "no close":
        body = body[: body.rindex(b"--" + b + b"--")]
    elif case == "epilogue":
        body += b"trailing words"
    elif case == "extra header":
        body = body.replace(b"Content-Type", b"X-Other: 1\r\nContent-Type", 1)
    elif case == "no filename":
        body = body.replace(b'; filename="d.png"', b"")
    elif case == "too many":
        body, content_type = encoded([("files", ("a", b"1")), ("files", ("b", b"2"))])
        assert file_parts(body, content_type, max_parts=1) is None
        return
    assert file_parts(body, content_type, max_parts=8) is None


def test_no_boundary_is_not_the_simple_case():
    assert file_parts(b"--x\r\n", "multipart/form-data", max_parts=8) is None


def test_quoted_and_unusual_headers_take_the_header_parser_and_agree():
    body, content_type = encoded({"file": ("d.png", b"pixels")})
    b = boundary_of(content_type).decode()
    quoted = f'multipart/form-data; charset=utf-8; boundary="{b}"'
    body2 = body.replace(b'name="file"; filename="d.png"', b'filename="d.png"; name=file')
    for data, ctype in ((body, quoted), (body2, content_type)):
        assert file_parts(data, ctype, max_parts=8) == general(data, ctype)
        assert file_parts(data, ctype, max_parts=8) == [("file", "d.png", b"pixels")]
