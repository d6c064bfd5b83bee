"""The one error -> HTTP status mapping (shared.errors) gives the statuses the apps answered
with before it moved there, and `error_body` has shared.api.schemas.ErrorResponse's shape."""

from __future__ import annotations

import pytest

from shared.api import ErrorResponse
from shared.errors import (
    ArchiveError,
    ArchiveTooLargeError,
    AuthError,
    BodyTimeoutError,
    BundleError,
    ConfigError,
    ConflictError,
    DatasetError,
    ImageError,
    ImageTooLargeError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    QueueFullError,
    SIQError,
    UnknownDatasetError,
    UnsupportedArchiveError,
    UnsupportedImageError,
    UnsupportedModelError,
    UploadError,
    error_body,
    error_headers,
)

# Every class of shared.errors with the status the app that raises it answered before.
STATUSES: list[tuple[type[SIQError], int]] = [
    (SIQError, 400),  # the client's fallback (the server never raised a bare SIQError)
    (BundleError, 500),  # the server's: a stored file is corrupt (no client route raises it)
    (ImageError, 422),
    (UnsupportedImageError, 415),
    (ImageTooLargeError, 413),
    (UploadError, 422),
    (DatasetError, 422),
    (ArchiveError, 422),  # POST /datasets: a path that escapes, a link, a bad layout
    (ArchiveTooLargeError, 413),  # ... too many files or bytes, or inflating past the ratio
    (UnsupportedArchiveError, 415),  # ... neither zip nor tar
    (ConfigError, 422),
    (UnknownDatasetError, 422),
    (UnsupportedModelError, 422),  # GET /bundles/{id}/c of a graph the C generator cannot express
    (NotFoundError, 404),
    (ConflictError, 409),
    (AuthError, 401),
    (NotReadyError, 503),
    (BodyTimeoutError, 408),  # the client's, for a body that stops arriving (issue 11)
    (OverloadedError, 503),  # the client's load shedding, with Retry-After (issue 11)
    (QueueFullError, 429),  # the server's job queue at SIQ_MAX_QUEUED_JOBS (issue 11)
]


@pytest.mark.parametrize(("cls", "status"), STATUSES, ids=[c.__name__ for c, _ in STATUSES])
def test_each_class_maps_to_its_status(cls: type[SIQError], status: int) -> None:
    assert cls("x").http_status == status


def test_every_class_is_in_the_table() -> None:
    import shared.errors

    classes = {getattr(shared.errors, n) for n in shared.errors.__all__}
    classes = {c for c in classes if isinstance(c, type) and issubclass(c, SIQError)}
    assert classes == {cls for cls, _ in STATUSES}


def test_a_wrong_token_is_403_and_forbidden() -> None:
    wrong = AuthError("bad token", 403)
    assert (wrong.http_status, wrong.status_code, wrong.code) == (403, 403, "forbidden")
    assert AuthError("no token").code == "unauthorized"


def test_error_body_has_the_schema_shape() -> None:
    body = error_body(UnknownDatasetError("no data set 'nope'"))
    assert body == {
        "error": {"code": "unknown_dataset", "message": "no data set 'nope'", "field": "dataset"}
    }
    ErrorResponse.model_validate(body)
    assert error_body(ImageTooLargeError("big"))["error"]["field"] is None


def test_an_error_that_says_when_to_retry_carries_retry_after() -> None:
    assert error_headers(OverloadedError("busy", retry_after=3)) == {"Retry-After": "3"}
    assert error_headers(NotReadyError("no bundle")) is None
