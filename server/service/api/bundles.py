"""Routes of /bundles.

GET /bundles                       published bundles, newest first (`dataset` filter)
GET /bundles/{id}                  the file; headers X-SIQ-Bundle-SHA256, ETag "<id>",
                                   X-SIQ-Signature (when SIQ_BUNDLE_HMAC_KEY is set);
                                   If-None-Match with the ETag gives 304
GET /bundles/latest?dataset=NAME   the newest bundle for NAME, served directly (no redirect,
                                   so clients need not follow one); X-SIQ-Bundle-Id and
                                   Content-Location name the id it resolved to
GET /bundles/{id}/manifest         the manifest JSON (`latest` works here too)
GET /bundles/{id}/onnx             the network as an integer-only ONNX model
                                   (`?inputs=images` for float32 image input; `latest` too)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Response

from server.service.api.deps import BundleStoreDep, SettingsDep, require_reader
from server.service.api.errors import ERROR_RESPONSES
from shared.api import BundleInfo, BundleList, ErrorResponse
from shared.bundle import sign
from shared.onnx import to_onnx

__all__ = ["router"]

# the options of every router under /bundles (this one, and api/onchip.py's)
BUNDLE_ROUTES: dict[str, Any] = {
    "prefix": "/bundles",
    "tags": ["bundles"],
    "responses": ERROR_RESPONSES,
    "dependencies": [Depends(require_reader)],
}
router = APIRouter(**BUNDLE_ROUTES)
DatasetQuery = Annotated[
    str | None, Query(max_length=100, description="with `latest`: newest for this data set")
]
BUNDLE_FILE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "the bundle file"},
    304: {"description": "not modified (If-None-Match matched the ETag)"},
    500: {"model": ErrorResponse, "description": "bad_bundle: the file no longer matches its id"},
}


@router.get("", response_model=BundleList, summary="Published bundles, newest first")
def list_bundles(bundles: BundleStoreDep, dataset: DatasetQuery = None) -> BundleList:
    return BundleList(items=[BundleInfo(**r.as_dict()) for r in bundles.list(dataset)])


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags or etag.strip('"') in tags


@router.get(
    "/{bundle_id}",
    response_class=Response,
    responses=BUNDLE_FILE,
    summary="Download a bundle (`latest` with ?dataset= resolves to the newest)",
)
def download_bundle(
    bundle_id: str,
    bundles: BundleStoreDep,
    settings: SettingsDep,
    dataset: DatasetQuery = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    record = bundles.resolve(bundle_id, dataset)
    etag = f'"{record.id}"'
    latest = bundle_id == "latest"
    headers = {
        "ETag": etag,
        "X-SIQ-Bundle-Id": record.id,
        "X-SIQ-Bundle-SHA256": record.id,
        "Content-Location": f"/bundles/{record.id}",
        # an id names fixed bytes forever; `latest` moves
        "Cache-Control": "no-cache" if latest else "public, max-age=31536000, immutable",
    }
    if _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    data = bundles.read(record)
    if settings.bundle_hmac_key:
        headers["X-SIQ-Signature"] = sign(data, settings.bundle_hmac_key)
    headers["Content-Disposition"] = f'attachment; filename="{record.id}.siq"'
    return Response(data, media_type="application/octet-stream", headers=headers)


@router.get("/{bundle_id}/manifest", summary="A bundle's manifest (JSON)")
def bundle_manifest(
    bundle_id: str, bundles: BundleStoreDep, dataset: DatasetQuery = None
) -> dict[str, Any]:
    return bundles.manifest(bundles.resolve(bundle_id, dataset))


@router.get(
    "/{bundle_id}/onnx",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "ONNX model"}},
    summary="The bundle as an ONNX model with the client's integer logits (docs: README)",
)
def bundle_onnx(
    bundle_id: str,
    bundles: BundleStoreDep,
    dataset: DatasetQuery = None,
    inputs: Literal["codes", "images"] = "codes",
) -> Response:
    record = bundles.resolve(bundle_id, dataset)
    model = bundles.derived(record, f"{inputs}.onnx", lambda b: to_onnx(b, inputs=inputs))
    return Response(
        model,
        media_type="application/octet-stream",
        headers={
            "X-SIQ-Bundle-Id": record.id,
            "Content-Disposition": f'attachment; filename="{record.id}-{inputs}.onnx"',
        },
    )
