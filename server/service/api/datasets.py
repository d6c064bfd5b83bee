"""Data sets: the ones the server can train on (GET), and image data sets uploaded as an
archive (POST), deleted again (DELETE). The store is server/service/datasets.py; unpacking
and checking an archive is server/data/archive.py and upload.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from server.service.api.deps import ContextDep, require_reader, require_writer
from server.service.api.errors import ERROR_RESPONSES
from server.service.settings import ServerSettings
from server.service.uploads import NAME_PATTERN
from shared.api import DatasetInfo, ErrorResponse
from shared.errors import ArchiveError, NotFoundError, SIQError

__all__ = ["router", "UPLOAD_PATH", "receive_body"]

router = APIRouter(prefix="/datasets", tags=["datasets"])
UPLOAD_PATH = "/datasets"  # the front door gives its body SIQ_DATASET_MAX_UPLOAD_BYTES


def _default(name: str) -> Any:
    return ServerSettings.model_fields[name].default


_LIMITS = "\n".join(
    f"- `SIQ_{name.upper()}` (default {_default(name)}): "
    f"{ServerSettings.model_fields[name].description}"
    for name in ServerSettings.model_fields
    if name.startswith("dataset_")
)
_UPLOAD_DOC = f"""The body is the archive itself (zip, tar, tar.gz, tar.bz2 or tar.xz; the format
is read from its bytes, whatever the Content-Type says), streamed to disk, never held in memory:
`curl --data-binary @pets.zip -H 'Content-Type: application/zip' '.../datasets?name=pets'`.

It holds `train/<class>/<image>` and `test/<class>/<image>`, or `<class>/<image>` split by
a deterministic hash split (`test_fraction` of each class, ranked by the SHA-256 of the
file names, at least one), either inside at most one top folder. Hidden files (`.*`,
`__MACOSX/`) are ignored. A job then names the data set like any other (`"dataset": name`).

Refused, leaving nothing behind: a path that escapes (`..`, absolute, a drive letter), a
link or device file, a file that is not an image or does not decode (all listed), fewer
than two classes, a class with no test images (422); a name that exists (409); an archive
over the limits (413) or one this server does not read (415). The limits (settings):
{_LIMITS}"""

_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    **{code: ERROR_RESPONSES[code] for code in (401, 403, 408)},
    409: {"model": ErrorResponse, "description": "a data set of that name exists"},
    413: {
        "model": ErrorResponse,
        "description": "over SIQ_DATASET_MAX_UPLOAD_BYTES, _MAX_FILES, _MAX_FILE_BYTES, "
        "_MAX_TOTAL_BYTES or _MAX_RATIO",
    },
    415: {"model": ErrorResponse, "description": "not a zip, tar or compressed tar archive"},
    422: {
        "model": ErrorResponse,
        "description": "a bad name, or an archive refused: `message` says why (files listed)",
    },
}
# one media type in the document (a schema fuzzer can send it); any Content-Type is taken
_ARCHIVE_BODY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


@router.get(
    "",
    response_model=list[DatasetInfo],
    dependencies=[Depends(require_reader)],
    responses={code: ERROR_RESPONSES[code] for code in (401, 403)},  # SIQ_PROTECT_READS
    summary="Data sets available for quantize jobs, with per-class counts",
)
def list_all(ctx: ContextDep) -> list[DatasetInfo]:
    return [DatasetInfo(**d) for d in ctx.datasets.listing()]


@router.get(
    "/{name}",
    response_model=DatasetInfo,
    dependencies=[Depends(require_reader)],
    responses={code: ERROR_RESPONSES[code] for code in (401, 403, 404)},
    summary="One data set",
)
def get_one(name: str, ctx: ContextDep) -> DatasetInfo:
    for info in ctx.datasets.listing():
        if info["name"] == name:
            return DatasetInfo(**info)
    raise NotFoundError(f"no data set named {name[:80]!r} (see GET /datasets)")


@router.post(
    "",
    status_code=201,
    response_model=DatasetInfo,
    dependencies=[Depends(require_writer)],
    responses=_UPLOAD_RESPONSES,
    summary="Upload an image data set as an archive",
    description=_UPLOAD_DOC,
    openapi_extra={"requestBody": {"required": True, "content": _ARCHIVE_BODY}},
)
async def upload(
    request: Request,
    response: Response,
    ctx: ContextDep,
    name: Annotated[
        str,
        Query(
            max_length=200,
            description="the new data set's name (checked here, with a message that says why)",
            json_schema_extra={"pattern": NAME_PATTERN},
        ),
    ],
    test_fraction: Annotated[
        float | None,
        Query(gt=0, lt=1, description="test share of a <class>/* archive (default: the setting)"),
    ] = None,
) -> DatasetInfo:
    store = ctx.datasets
    store.check_new_name(name)  # before a byte of the body is read
    with store.staging() as staging:
        archive = staging / "archive"
        if await receive_body(request, archive) == 0:
            raise ArchiveError("the body is empty: send the archive's bytes")
        info = await run_in_threadpool(store.add, name, archive, staging, test_fraction)
    response.headers["Location"] = f"/datasets/{name}"
    return DatasetInfo(**info)


async def receive_body(request: Request, path: Path, error: type[SIQError] = ArchiveError) -> int:
    """Stream the body into `path` (the front door bounds its size and time); its size.
    A body cut short is `error` (422)."""
    size = 0
    try:
        async with await anyio.open_file(path, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                await out.write(chunk)
    except ClientDisconnect:
        raise error(f"the body did not arrive whole ({size} bytes came)") from None
    return size


@router.delete(
    "/{name}",
    status_code=204,
    dependencies=[Depends(require_writer)],
    responses={
        **{code: ERROR_RESPONSES[code] for code in (401, 403)},
        404: {"model": ErrorResponse, "description": "no uploaded data set of that name"},
        409: {"model": ErrorResponse, "description": "a queued or running job uses it"},
    },
    summary="Delete an uploaded data set that no queued or running job uses",
)
def delete(name: str, ctx: ContextDep) -> Response:
    ctx.datasets.remove(name, ctx.jobs.active_datasets)
    return Response(status_code=204)
