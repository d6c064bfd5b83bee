"""Routes of /quantize-jobs.

POST /quantize-jobs              submit (202 + Location); `Idempotency-Key` makes retries safe
GET  /quantize-jobs              newest first; `limit` (1..100, default 20) and `offset` paging,
                                 optional `status` filter; `next_offset` is null on the last page
GET  /quantize-jobs/{id}         status, progress, iterations, result or error
POST /quantize-jobs/{id}/cancel  queued: cancelled at once; running: stops within ~3 s;
                                 finished: 409
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response

from server.data import check_dataset
from server.job_spec import JobSpec
from server.params import QuantizeJobCreate
from server.service.api.bounded_body import BoundedBodyRoute
from server.service.api.deps import (
    ContextDep,
    JobStoreDep,
    RunnerDep,
    require_reader,
    require_writer,
)
from server.service.api.errors import ERROR_RESPONSES
from server.service.jobs import JobRecord
from shared.api import (
    ErrorResponse,
    JobResult,
    JobRoleInfo,
    JobStatus,
    QuantizeJobList,
    QuantizeJobPublic,
)

__all__ = ["router", "to_public"]

router = APIRouter(
    prefix="/quantize-jobs",
    tags=["quantize jobs"],
    responses=ERROR_RESPONSES,
    route_class=BoundedBodyRoute,
)
MAX_OFFSET = 1 << 31  # SQLite's OFFSET is a signed 64-bit integer; no server holds 2^31 jobs
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"\S",
        description="retrying a POST with the same key returns the same job",
    ),
]


# kept in the results of jobs an older server recorded: a server path and the iterations
# (shown beside the result)
_NOT_PUBLIC = {"bundle_path", "iterations"}


def to_public(job: JobRecord) -> QuantizeJobPublic:
    links = {"self": f"/quantize-jobs/{job.id}", "cancel": f"/quantize-jobs/{job.id}/cancel"}
    result = job.result
    if result is not None:
        links["bundle"] = f"/bundles/{result.bundle_id}"
        if _NOT_PUBLIC & set(result.model_extra or ()):
            result = JobResult.model_validate(result.model_dump(exclude=_NOT_PUBLIC))
    params = job.spec.params
    return QuantizeJobPublic(
        id=job.id,
        status=job.status,
        dataset=params.dataset,
        weight_bits=params.weight_bits,
        activation_bits=params.activation_bits,
        config=params.model_dump(exclude_unset=True),
        role=JobRoleInfo.model_validate(job.spec.role.model_dump()),
        created=job.created,
        started=job.started,
        finished=job.finished,
        cancel_requested=job.cancel_requested,
        progress=job.progress,
        iterations=job.iterations,
        result=result,
        error=job.error,
        links=links,
    )


# what both write routes (submit, cancel) answer: 202 and the job, behind the write token
_WRITE: dict[str, Any] = {
    "status_code": 202,
    "response_model": QuantizeJobPublic,
    "dependencies": [Depends(require_writer)],
}


@router.post(
    "",
    **_WRITE,
    summary="Submit a quantize job",
    responses={
        202: {
            "description": "queued (or, with a known Idempotency-Key, the job made before)",
            "headers": {
                "Location": {"description": "the job's URL", "schema": {"type": "string"}},
                "Idempotent-Replayed": {
                    "description": "`true` when an Idempotency-Key matched an earlier job",
                    "schema": {"type": "string"},
                },
            },
        },
        429: {
            "model": ErrorResponse,
            "description": "SIQ_MAX_QUEUED_JOBS jobs are queued already; see Retry-After",
            "headers": {"Retry-After": {"schema": {"type": "string"}}},
        },
    },
)
def submit_job(
    body: QuantizeJobCreate,
    response: Response,
    ctx: ContextDep,
    jobs: JobStoreDep,
    runner: RunnerDep,
    idempotency_key: IdempotencyKey = None,
) -> QuantizeJobPublic:
    settings = ctx.settings
    check_dataset(body.dataset, settings.data_dir, settings.uploads_dir)
    if body.network is not None:
        ctx.networks.check_job(body.network, body.dataset)
    if body.device is None and settings.device != "auto":  # the server's default, recorded
        body = body.model_copy(update={"device": settings.device})
    job, created = jobs.create(JobSpec(params=body), idempotency_key, settings.max_queued_jobs)
    if created:
        runner.wake()
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/quantize-jobs/{job.id}"
    return to_public(job)


@router.get(
    "",
    response_model=QuantizeJobList,
    dependencies=[Depends(require_reader)],
    summary="List jobs, newest first",
)
def list_jobs(
    jobs: JobStoreDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    status: JobStatus | None = None,
) -> QuantizeJobList:
    page, total = jobs.page(limit, offset, status)
    next_offset = offset + len(page) if offset + len(page) < total else None
    return QuantizeJobList(
        items=[to_public(j) for j in page],
        total=total,
        limit=limit,
        offset=offset,
        next_offset=next_offset,
    )


@router.get(
    "/{job_id}",
    response_model=QuantizeJobPublic,
    dependencies=[Depends(require_reader)],
    summary="A job's status, progress, iterations and result",
)
def get_job(job_id: str, jobs: JobStoreDep) -> QuantizeJobPublic:
    return to_public(jobs.get(job_id))


@router.post(
    "/{job_id}/cancel",
    **_WRITE,
    summary="Cancel a queued or running job (409 when it already ended)",
)
def cancel_job(job_id: str, jobs: JobStoreDep, runner: RunnerDep) -> QuantizeJobPublic:
    job = jobs.cancel(job_id)
    runner.wake()
    return to_public(job)
