"""Routes of a bundle on a chip (docs/ARCHITECTURE.md, "On chip").

GET /bundles/{id}/c      the bundle's C99 library (siq_model.h, siq_model.c) as a .tar.gz
GET /bundles/{id}/cost   the cost report: weight and activation memory, MACs, energy estimate
                         (`latest` with ?dataset= works for both)
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Response

from server.service.api.bundles import BUNDLE_ROUTES, DatasetQuery
from server.service.api.deps import BundleStoreDep
from shared.cgen import generate_bundle_c, sources_tar_gz
from shared.network import cost_report

__all__ = ["router"]

router = APIRouter(**BUNDLE_ROUTES)
TAR_GZ: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/gzip": {}}, "description": "siq_model/{.h,.c}"}
}


@router.get(
    "/{bundle_id}/c",
    response_class=Response,
    responses=TAR_GZ,
    summary="The bundle as a dependency-free C99 library (.tar.gz)",
)
def bundle_c(bundle_id: str, bundles: BundleStoreDep, dataset: DatasetQuery = None) -> Response:
    record = bundles.resolve(bundle_id, dataset)
    data = bundles.derived(record, "c.tar.gz", lambda b: sources_tar_gz(generate_bundle_c(b)))
    name = f"siq_model-{record.id[:12]}.tar.gz"
    headers = {
        "Content-Disposition": f'attachment; filename="{name}"',
        "X-SIQ-Bundle-Id": record.id,
    }
    return Response(data, media_type="application/gzip", headers=headers)


@router.get("/{bundle_id}/cost", summary="The bundle's on-chip cost report (JSON)")
def bundle_cost(
    bundle_id: str, bundles: BundleStoreDep, dataset: DatasetQuery = None
) -> dict[str, Any]:
    record = bundles.resolve(bundle_id, dataset)
    report = bundles.derived(
        record, "cost.json", lambda b: json.dumps(cost_report(b.manifest)).encode()
    )
    return {"bundle_id": record.id, **json.loads(report)}
