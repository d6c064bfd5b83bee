"""A JSON body that is not a JSON object gets an answer that says what was wrong, on both JSON
routes (jobs and sweeps): no Content-Type, malformed JSON, an array, an empty body. Pydantic's
own words were "body: Input should be a valid dictionary" and the field "21"."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.service.app import create_app
from tests.server.api_helpers import make_settings

CASES = [  # body, Content-Type, what the message must say
    (b'{"dataset": "digits"}', None, "Content-Type: application/json (no Content-Type)"),
    (b'{"dataset": "digits"}', "text/plain", "Content-Type 'text/plain'"),
    (b'{"dataset": "digits",}', "application/json", "not valid JSON: Expecting property name"),
    (b'["digits"]', "application/json", "must be a JSON object ({...}), not an array"),
    (b"", "application/json", "the body is empty"),
]


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory):
    with TestClient(create_app(make_settings(tmp_path_factory.mktemp("json")))) as client:
        yield client


@pytest.mark.parametrize("route", ["/quantize-jobs", "/quantize-sweeps"])
@pytest.mark.parametrize(("body", "content_type", "says"), CASES)
def test_a_body_that_is_no_json_object_says_what_was_wrong(
    http: TestClient, route: str, body: bytes, content_type: str | None, says: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    answer = http.post(route, content=body, headers=headers)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_request" and error["field"] == "body", error
    assert says in error["message"], error["message"]


def test_field_errors_still_name_the_field(http: TestClient) -> None:
    answer = http.post("/quantize-jobs", json={"dataset": "digits", "weight_bits": 99})
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "weight_bits"


def test_a_json_body_without_a_content_type_is_not_accepted_silently(tmp_path: Path) -> None:
    """The answer names the header to send; the same body with it is accepted."""
    with TestClient(create_app(make_settings(tmp_path))) as client:
        body = b'{"dataset": "digits", "weight_bits": 4, "activation_bits": 4}'
        assert client.post("/quantize-jobs", content=body).status_code == 422
        sent = client.post(
            "/quantize-jobs", content=body, headers={"content-type": "application/json"}
        )
        assert sent.status_code == 202, sent.text
