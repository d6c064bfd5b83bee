"""POST /recognize: one image (`file`), several (`files`), or a raw image/* body. The work is
the serving pipeline's (client/serving/pipeline.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from client.api.deps import pipeline_of
from client.openapi import RECOGNIZE

__all__ = ["router"]

router = APIRouter(tags=["recognition"])


@router.post("/recognize", **RECOGNIZE)
async def recognize_route(request: Request) -> JSONResponse:
    return JSONResponse(await pipeline_of(request).recognize(request))
