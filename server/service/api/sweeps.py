"""Routes of /quantize-sweeps: a grid of (weight bits x activation bits x seeds) quantize
jobs, the float model trained once per seed (server/service/sweeps.py).

POST /quantize-sweeps              submit (202 + Location); every cell becomes a quantize job
GET  /quantize-sweeps/{id}         status, runs, accuracy x bits table, best bundle in budget
POST /quantize-sweeps/{id}/cancel  cancel every run not finished yet
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from pydantic import Field, model_validator

from server.data import check_dataset
from server.params import ActivationBits, JobKnobs, Seed, WeightBits
from server.service.api.bounded_body import BoundedBodyRoute
from server.service.api.deps import (
    RunnerDep,
    SettingsDep,
    SweepStoreDep,
    require_reader,
    require_writer,
)
from server.service.api.errors import ERROR_RESPONSES

__all__ = ["router", "QuantizeSweepCreate", "MAX_RUNS"]

router = APIRouter(
    prefix="/quantize-sweeps",
    tags=["quantize sweeps"],
    responses=ERROR_RESPONSES,
    route_class=BoundedBodyRoute,
)
MAX_RUNS = 64


class QuantizeSweepCreate(JobKnobs):
    """A job's knobs, with lists where a job has one value: weight_bits, activation_bits
    and seeds span the grid; the other knobs apply to every run."""

    weight_bits: list[WeightBits] = Field(min_length=1, max_length=8)
    activation_bits: list[ActivationBits] = Field(min_length=1, max_length=7)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=8)
    byte_budget: int | None = Field(
        None, ge=1, description="the best bundle is the most accurate of at most this size"
    )

    @model_validator(mode="before")
    @classmethod
    def _seeds_not_seed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "seed" in data:
            raise ValueError("a sweep takes `seeds` (a list), not `seed`")
        return data

    @model_validator(mode="after")
    def _grid(self) -> QuantizeSweepCreate:
        for name in ("weight_bits", "activation_bits", "seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name}: distinct values, got {values}")
        runs = len(self.weight_bits) * len(self.activation_bits) * len(self.seeds)
        if runs > MAX_RUNS:
            raise ValueError(f"the grid has {runs} runs; at most {MAX_RUNS}")
        return self

    def to_request(self) -> dict[str, Any]:
        grid = {"dataset", "weight_bits", "activation_bits", "seeds", "byte_budget"}
        return {
            "dataset": self.dataset,
            "weight_bits": self.weight_bits,
            "activation_bits": self.activation_bits,
            "seeds": self.seeds,
            "byte_budget": self.byte_budget,
            "knobs": self.model_dump(exclude_unset=True, exclude=grid),
        }


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
    check_dataset(body.dataset, settings.data_dir)
    sweep_id = sweeps.create(body.to_request())
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
