"""What a quantize job is: `JobSpec`, its parameters and its role, the one form a job has from
the route that accepts it to the training entry that runs it (torch-free).

    POST /quantize-jobs body ──► JobSpec(params=body) ──► SQLite (jobs.config + jobs.role)
        ──► JobSpec ──► an executor (local worker process or Ray task) ──► run_job(spec, ...)

The role says how the job's float model comes to be:

- `PlainJob`: trains its own (every job submitted to /quantize-jobs);
- `SweepLead`: a sweep's first cell of a seed: trains the float model, hands it over as a
  checkpoint the moment it exists, then quantises from it;
- `SweepCell`: another cell of that seed: quantises from the checkpoint of `lead_job`.

So a sweep trains one float model per seed, and every role still ends with a bundle.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.params import JobParams

__all__ = ["PlainJob", "SweepLead", "SweepCell", "JobRole", "JobSpec"]

_ROLE = ConfigDict(extra="forbid", frozen=True)


class PlainJob(BaseModel):
    model_config = _ROLE

    kind: Literal["plain"] = "plain"


class SweepLead(BaseModel):
    model_config = _ROLE

    kind: Literal["sweep_lead"] = "sweep_lead"
    sweep_id: str


class SweepCell(BaseModel):
    model_config = _ROLE

    kind: Literal["sweep_cell"] = "sweep_cell"
    sweep_id: str
    lead_job: str = Field(description="the sweep lead job whose float checkpoint this starts from")


JobRole = Annotated[PlainJob | SweepLead | SweepCell, Field(discriminator="kind")]


class JobSpec(BaseModel):
    """A job: the parameters it runs with and its role."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    params: JobParams
    role: JobRole = PlainJob()

    @property
    def lead_job(self) -> str | None:
        """The sweep lead whose float checkpoint this job starts from (None: it trains its
        own)."""
        return self.role.lead_job if isinstance(self.role, SweepCell) else None
