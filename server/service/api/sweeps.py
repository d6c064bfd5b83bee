"""Routes of /quantize-sweeps: a grid of (weight bits x activation bits x seeds) quantize
jobs, the float model trained once per seed (server/service/sweeps.py).

POST /quantize-sweeps              submit (202 + Location); every cell becomes a quantize job
GET  /quantize-sweeps/{id}         status, runs, accuracy x bits table, best bundle in budget
POST /quantize-sweeps/{id}/cancel  cancel every run not finished yet
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from server.data import check_dataset
from server.params import QuantizeSweepCreate
from server.service.api.bounded_body import BoundedBodyRoute
from server.service.api.deps import (
    RunnerDep,
    SettingsDep,
    SweepStoreDep,
    require_reader,
    require_writer,
)
from server.service.api.errors import ERROR_RESPONSES

__all__ = ["router"]

router = APIRouter(
    prefix="/quantize-sweeps",
    tags=["quantize sweeps"],
    responses=ERROR_RESPONSES,
    route_class=BoundedBodyRoute,
)


@router.post(
    "",
    status_code=202,
    dependencies=[Depends(require_writer)],
    summary="Submit a bit-grid sweep (each cell an ordinary quantize job)",
)
def submit_sweep(
    body: QuantizeSweepCreate,
    response: Response,
    settings: SettingsDep,
    sweeps: SweepStoreDep,
    runner: RunnerDep,
) -> dict[str, Any]:
    check_dataset(body.dataset, settings.data_dir, settings.uploads_dir)
    sweep_id = sweeps.create(body)
    runner.wake()
    response.headers["Location"] = f"/quantize-sweeps/{sweep_id}"
    return sweeps.summary(sweep_id)


@router.get(
    "/{sweep_id}",
    dependencies=[Depends(require_reader)],
    summary="A sweep's status, runs, accuracy x bits table and best bundle",
)
def get_sweep(sweep_id: str, sweeps: SweepStoreDep) -> dict[str, Any]:
    return sweeps.summary(sweep_id)


@router.post(
    "/{sweep_id}/cancel",
    status_code=202,
    dependencies=[Depends(require_writer)],
    summary="Cancel the sweep's runs that have not finished",
)
def cancel_sweep(sweep_id: str, sweeps: SweepStoreDep, runner: RunnerDep) -> dict[str, Any]:
    sweeps.cancel(sweep_id)
    runner.wake()
    return sweeps.summary(sweep_id)
