"""``POST /v1/batches`` and ``GET /v1/batches/{batch_id}``: many images, one job each."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from starlette.concurrency import run_in_threadpool

from service.api.deps import CallerDep, JobServiceDep, SettingsDep
from service.api.openapi import BINARY, request_body
from service.api.routes.jobs import ERRORS
from service.schemas import BatchRequest, BatchResource
from service.uploads import parse_batch_request

router = APIRouter(prefix="/v1", tags=["batches"])


@router.post(
    "/batches",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchResource,
    responses=ERRORS,
    openapi_extra=request_body(BatchRequest, {"files": {"type": "array", "items": BINARY}}),
    summary="Certify many images with one model and shared parameters",
)
async def create_batch(
    request: Request,
    response: Response,
    caller: CallerDep,
    jobs: JobServiceDep,
    settings: SettingsDep,
) -> BatchResource:
    model, options, uploads = await parse_batch_request(
        request, settings.max_upload_bytes, settings.max_batch_images, settings.max_batch_bytes
    )
    batch = await run_in_threadpool(jobs.submit_batch, model, options, uploads, caller)
    records = await run_in_threadpool(jobs.batch, batch.id, caller)
    response.headers["Location"] = f"/v1/batches/{batch.id}"
    return BatchResource.from_records(*records)


@router.get(
    "/batches/{batch_id}", response_model=BatchResource, responses=ERRORS, summary="A batch"
)
def get_batch(batch_id: str, caller: CallerDep, jobs: JobServiceDep) -> BatchResource:
    return BatchResource.from_records(*jobs.batch(batch_id, caller))
