"""Networks: float ONNX models users bring (POST), listed (GET), deleted (DELETE). The store
is server/service/networks.py; reading a model into the integer contract is
server/networks/onnx_import.py. A job names one as `network`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from server.networks import ONNX_OPS, NetworkError
from server.service.api.datasets import receive_body
from server.service.api.deps import ContextDep, require_reader, require_writer
from server.service.api.errors import ERROR_RESPONSES
from server.service.uploads import NAME_PATTERN
from shared.api import ErrorResponse, NetworkInfo

__all__ = ["router", "UPLOAD_PATH", "ONNX_MEDIA_TYPE"]

router = APIRouter(prefix="/networks", tags=["networks"])
UPLOAD_PATH = "/networks"  # the front door gives its body SIQ_NETWORK_MAX_UPLOAD_BYTES
# the body's one documented media type (ONNX has no registered one); any Content-Type is taken
ONNX_MEDIA_TYPE = "application/x-onnx"

_UPLOAD_DOC = f"""The body is a float ONNX model (protobuf, its weights inside it), streamed to
disk: `curl --data-binary @net.onnx '.../networks?name=mynet'` (any Content-Type). One input (N, C, H, W) with
fixed C, H = W: the data set's preprocessed images in [0, 1]; one output, the logits.

The ops the integer contract runs: {", ".join(o for o in ONNX_OPS if o != "Constant")}
(Constant for their parameters). A Conv, Gemm or MatMul needs its weights as initializers;
BatchNormalization, Relu and Clip(0, 6) follow a Conv (Relu / Clip a Gemm or an Add too); an
Add is followed by Relu or Clip(0, 6) and takes at most one input without an activation; pools
have no padding. Anything else is a 422 naming the op and the node; a model over
SIQ_NETWORK_MAX_UPLOAD_BYTES or SIQ_NETWORK_MAX_NODES is a 413. A job names the network as
`"network": name` and starts from its weights (`epochs`: fine-tuning, default 0)."""


@router.get(
    "",
    response_model=list[NetworkInfo],
    dependencies=[Depends(require_reader)],
    responses={code: ERROR_RESPONSES[code] for code in (401, 403)},
    summary="Networks uploaded as ONNX models, with their input shape and graph",
)
def list_all(ctx: ContextDep) -> list[NetworkInfo]:
    return [NetworkInfo(**n) for n in ctx.networks.listing()]


@router.get(
    "/{name}",
    response_model=NetworkInfo,
    dependencies=[Depends(require_reader)],
    responses={code: ERROR_RESPONSES[code] for code in (401, 403, 404)},
    summary="One network",
)
def get_one(name: str, ctx: ContextDep) -> NetworkInfo:
    return NetworkInfo(**ctx.networks.get(name))


@router.post(
    "",
    status_code=201,
    response_model=NetworkInfo,
    dependencies=[Depends(require_writer)],
    responses={
        **{code: ERROR_RESPONSES[code] for code in (401, 403, 408)},
        409: {"model": ErrorResponse, "description": "a network of that name exists"},
        413: {"model": ErrorResponse, "description": "too many bytes or nodes"},
        422: {"model": ErrorResponse, "description": "not a model the integer contract takes"},
    },
    summary="Upload a float ONNX network",
    description=_UPLOAD_DOC,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {ONNX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload(
    request: Request,
    response: Response,
    ctx: ContextDep,
    name: Annotated[
        str,
        Query(
            max_length=200,
            description="the network's name",
            json_schema_extra={"pattern": NAME_PATTERN},
        ),
    ],
) -> NetworkInfo:
    store = ctx.networks
    store.check_new_name(name)
    with store.staging() as staging:
        model = staging / "model.onnx"
        if await receive_body(request, model, NetworkError) == 0:
            raise NetworkError("the body is empty: send the ONNX model's bytes")
        info = await run_in_threadpool(store.add, name, model, staging)
    response.headers["Location"] = f"/networks/{name}"
    return NetworkInfo(**info)


@router.delete(
    "/{name}",
    status_code=204,
    dependencies=[Depends(require_writer)],
    responses={
        **{code: ERROR_RESPONSES[code] for code in (401, 403)},
        404: {"model": ErrorResponse, "description": "no network of that name"},
        409: {"model": ErrorResponse, "description": "a queued or running job uses it"},
    },
    summary="Delete a network that no queued or running job uses",
)
def delete(name: str, ctx: ContextDep) -> Response:
    ctx.networks.remove(name, ctx.jobs.active_networks)
    return Response(status_code=204)
