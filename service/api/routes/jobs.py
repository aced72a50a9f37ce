"""``POST /v1/certify`` and the job resource ``/v1/jobs/{job_id}``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from starlette.concurrency import run_in_threadpool

from service.api.deps import CallerDep, JobServiceDep, SubmissionDep
from service.api.openapi import BINARY, request_body
from service.schemas import CertifyRequest, ErrorResponse, JobResource
from service.uploads import parse_certify_request

router = APIRouter(prefix="/v1", tags=["certify"])

ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 413, 415, 422, 503)}
SUBMISSION_ERRORS = {
    **ERRORS,
    408: {"model": ErrorResponse, "description": "the body did not arrive in time"},
    429: {
        "model": ErrorResponse,
        "description": "the backlog of unfinished jobs is full; retry after `Retry-After`",
        "headers": {
            "Retry-After": {
                "description": "seconds until the backlog has room, estimated",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    },
}
"""What a submission can answer besides the errors of every route: 408 and 429."""


def submission_route(
    resource: type, finished: str, request_model: type, files: dict[str, Any]
) -> dict[str, Any]:
    """The arguments of a submission route (``POST``): 202 with ``resource``, 200 with it when
    ``finished`` within ``wait``, :data:`SUBMISSION_ERRORS`, and a body that is JSON
    (``request_model``) or a multipart form with ``files``."""
    return {
        "status_code": status.HTTP_202_ACCEPTED,
        "response_model": resource,
        "responses": {
            200: {"model": resource, "description": f"{finished} within `wait`"},
            **SUBMISSION_ERRORS,
        },
        "openapi_extra": request_body(request_model, files),
    }


@router.post(
    "/certify",
    summary="Certify one image",
    **submission_route(JobResource, "finished", CertifyRequest, {"file": BINARY}),
)
async def certify(
    submission: SubmissionDep,
    wait: Annotated[
        float | None, Query(ge=0, description="seconds to wait for the result (200 if done)")
    ] = None,
) -> JobResource:
    settings, jobs, caller = submission.settings, submission.jobs, submission.caller
    model, options, upload = await parse_certify_request(
        submission.request, settings.max_upload_bytes, settings.upload_timeout_seconds
    )
    job = await run_in_threadpool(jobs.submit, model, options, upload, caller)
    if wait:
        job = await jobs.wait_for(job.id, caller, wait)
    submission.answer(f"/v1/jobs/{job.id}", finished=bool(wait) and job.status.is_terminal)
    return JobResource.from_record(job)


@router.get("/jobs/{job_id}", response_model=JobResource, responses=ERRORS, summary="A job")
def get_job(job_id: str, caller: CallerDep, jobs: JobServiceDep) -> JobResource:
    return JobResource.from_record(jobs.job(job_id, caller))


@router.delete(
    "/jobs/{job_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobResource,
    responses=ERRORS,
    summary="Cancel a job (queued: at once; running: at its next batch)",
)
def cancel_job(job_id: str, caller: CallerDep, jobs: JobServiceDep) -> JobResource:
    return JobResource.from_record(jobs.cancel(job_id, caller))
