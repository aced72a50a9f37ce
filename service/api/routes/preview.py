"""``POST /v1/preview``: the input as the model sees it, and a few noisy samples at σ."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from service.api.deps import CallerDep, JobServiceDep, SettingsDep
from service.api.openapi import BINARY, request_body
from service.api.routes.jobs import ERRORS
from service.job_inputs import resolve_parameters
from service.preview import InputPreview, input_preview
from service.schemas import CertifyRequest
from service.uploads import parse_certify_request

router = APIRouter(prefix="/v1", tags=["certify"])


@router.post(
    "/preview",
    response_model=InputPreview,
    responses=ERRORS,
    openapi_extra=request_body(CertifyRequest, {"file": BINARY}),
    summary="The input as the model sees it, and noisy samples at σ (nothing is certified)",
)
async def preview(
    request: Request, _: CallerDep, jobs: JobServiceDep, settings: SettingsDep
) -> InputPreview:
    """Takes the body of ``POST /v1/certify``; ``sigma`` and ``seed`` choose the noise (the
    card's σ and a fresh seed by default), the other options are checked as a job's are."""
    model, options, upload = await parse_certify_request(
        request, settings.max_upload_bytes, settings.upload_timeout_seconds
    )

    def build() -> InputPreview:
        loaded = jobs.model(model, options.version)
        parameters = resolve_parameters(options, loaded, settings)
        return input_preview(
            upload,
            loaded,
            sigma=parameters.sigma,
            seed=parameters.seed,
            max_pixels=settings.max_image_pixels,
            budget=jobs.decode_budget,
        )

    return await run_in_threadpool(build)
