"""What the client's OpenAPI says about /recognize and the other routes: the request body
(multipart `file` / `files`, or a raw image/* body), the answer's shape and every error
status a route gives, so a schema fuzzer (schemathesis, tests/test_schemathesis_client.py)
finds no undocumented status. The routes pass these to their decorators."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from shared.api import ErrorResponse

__all__ = ["RecognizeResult", "RecognizeAnswer", "RECOGNIZE", "NOT_READY", "error_responses"]

IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/gif", "image/webp")


class RecognizeResult(BaseModel):
    index: int = Field(description="position of the image in the upload")
    filename: str
    label: int
    class_name: str
    confidence: float
    probabilities: list[float]
    bundle_id: str


class RecognizeAnswer(BaseModel):
    bundle_id: str = Field(description="the bundle that recognised every image")
    class_names: list[str]
    results: list[RecognizeResult]
    timings_ms: dict[str, float] = Field(description="decode, preprocess, inference, total")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    why = {
        408: "the request body did not arrive within SIQ_BODY_TIMEOUT_S, or came slower than "
        "SIQ_BODY_MIN_RATE bytes/s after SIQ_BODY_RATE_GRACE_S",
        413: "too many bytes, images or pixels (SIQ_MAX_UPLOAD_BYTES, SIQ_MAX_IMAGES, "
        "SIQ_MAX_PIXELS, SIQ_MAX_REQUEST_PIXELS)",
        415: "not an image in a supported format, or not multipart / image/*",
        422: "an image that cannot be used (empty, truncated, blank) or a malformed upload",
        503: "no bundle loaded yet, or overloaded: too many bodies being read or requests "
        "waiting (Retry-After says when to try again)",
    }
    return {s: {"model": ErrorResponse, "description": why[s]} for s in statuses}


_binary = {"type": "string", "format": "binary"}
_PARTS = ("file", "files")  # each part an image

RECOGNIZE: dict[str, Any] = {
    "summary": "Recognise one image or several",
    "responses": {200: {"model": RecognizeAnswer}, **error_responses(408, 413, 415, 422, 503)},
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {**_binary, "description": "one image"},
                            "files": {"type": "array", "items": _binary, "minItems": 1},
                        },
                        "anyOf": [{"required": ["file"]}, {"required": ["files"]}],
                        "additionalProperties": False,  # another field is 422
                    },
                    "encoding": {part: {"contentType": ", ".join(IMAGE_TYPES)} for part in _PARTS},
                },
                **{media: {"schema": _binary} for media in IMAGE_TYPES},
            },
        }
    },
}

NOT_READY: dict[str, Any] = {"responses": error_responses(503)}
