"""``POST /v1/batches`` and ``GET /v1/batches/{batch_id}``: many images, one job each."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from service.api.deps import CallerDep, JobServiceDep, SubmissionDep
from service.api.openapi import BINARY
from service.api.routes.jobs import ERRORS, submission_route
from service.schemas import BatchRequest, BatchResource
from service.uploads import parse_batch_request

router = APIRouter(prefix="/v1", tags=["batches"])


@router.post(
    "/batches",
    summary="Certify many images with one model and shared parameters",
    **submission_route(
        BatchResource,
        "every item finished",
        BatchRequest,
        {"files": {"type": "array", "items": BINARY}},
    ),
)
async def create_batch(
    submission: SubmissionDep,
    wait: Annotated[
        float | None,
        Query(ge=0, description="seconds to wait for every item (200 with all results if done)"),
    ] = None,
) -> BatchResource:
    settings, jobs, caller = submission.settings, submission.jobs, submission.caller
    model, options, uploads = await parse_batch_request(
        submission.request,
        settings.max_upload_bytes,
        settings.max_batch_images,
        settings.max_batch_bytes,
        settings.upload_timeout_seconds,
    )
    batch = await run_in_threadpool(jobs.submit_batch, model, options, uploads, caller)
    if wait:
        records = await jobs.wait_for_batch(batch.id, caller, wait)
    else:
        records = await run_in_threadpool(jobs.batch, batch.id, caller)
    resource = BatchResource.from_records(*records)
    submission.answer(
        f"/v1/batches/{batch.id}", finished=bool(wait) and resource.status == "finished"
    )
    return resource


@router.get(
    "/batches/{batch_id}", response_model=BatchResource, responses=ERRORS, summary="A batch"
)
def get_batch(batch_id: str, caller: CallerDep, jobs: JobServiceDep) -> BatchResource:
    return BatchResource.from_records(*jobs.batch(batch_id, caller))
