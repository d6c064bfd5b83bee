"""The client's HTTP edges (issue 11, item 11): unknown routes and wrong methods answer in
the one error shape, and a caller that stops sending its body mid-way is answered 408 and
disconnected after SIQ_BODY_TIMEOUT_S instead of holding its connection for ever."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import start_service


def test_404_and_405_use_the_error_shape(make_app, bundle_file):
    http = TestClient(make_app(str(bundle_file)))
    missing = http.get("/no/such/route")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found" and "detail" not in missing.json()
    wrong = http.get("/recognize")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_the_openapi_documents_what_recognize_answers(make_app, bundle_file):
    spec = TestClient(make_app(str(bundle_file))).get("/openapi.json").json()
    post = spec["paths"]["/recognize"]["post"]
    assert {"200", "408", "413", "415", "422", "503"} <= set(post["responses"])
    assert {"multipart/form-data", "image/png"} <= set(post["requestBody"]["content"])


def test_the_openapi_says_a_form_holds_at_least_one_image(make_app, bundle_file):
    # an empty form, an empty `files` or another field was schema-valid and is 422 (issue 28)
    spec = TestClient(make_app(str(bundle_file))).get("/openapi.json").json()
    form = spec["paths"]["/recognize"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["anyOf"] == [{"required": ["file"]}, {"required": ["files"]}]
    assert form["schema"]["properties"]["files"]["minItems"] == 1
    assert form["schema"]["additionalProperties"] is False  # any other field is 422
    for part in ("file", "files"):
        assert "image/png" in form["encoding"][part]["contentType"]


@pytest.mark.slow
def test_a_partial_body_is_answered_408_and_disconnected(tmp_path, service_env, bundle_file):
    env = dict(service_env, SIQ_BUNDLE=str(bundle_file), SIQ_STATE_DIR=str(tmp_path / "s"),
               SIQ_BODY_TIMEOUT_S="1")  # fmt: skip
    client = start_service("client", env, tmp_path / "client.log")
    try:
        client.wait_ready("/readyz")
        with socket.create_connection(("127.0.0.1", client.port), timeout=15) as sock:
            sock.sendall(
                b"POST /recognize HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 100000\r\n\r\n" + b"\x89PNG" * 10
            )
            start = time.monotonic()
            answer = b""
            while chunk := sock.recv(65536):  # until the client closes the connection
                answer += chunk
            waited = time.monotonic() - start
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"body_timeout"' in answer and 0.5 < waited < 10
        # the service is fine afterwards
        assert httpx.get(client.url + "/healthz", timeout=5).status_code == 200
    finally:
        client.stop()
