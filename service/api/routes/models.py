"""``GET /v1/models`` and ``GET /v1/models/{model_id}``: the model cards."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import CallerDep, JobServiceDep
from service.api.routes.jobs import ERRORS
from service.schemas import ErrorResponse, ModelList, ModelResource, ModelVersionStatus
from workers.model_cache import ModelUnavailableError, UnknownModelError

router = APIRouter(prefix="/v1", tags=["models"])

MODEL_ERRORS = {
    **ERRORS,
    503: {"model": ErrorResponse, "description": "the version fails its integrity checks"},
}


@router.get("/models", response_model=ModelList, responses=ERRORS, summary="The models")
def list_models(_: CallerDep, jobs: JobServiceDep) -> ModelList:
    """Each model at its default version; versions that fail to load under ``unavailable``."""
    available = []
    for model_id in jobs.models.model_ids():
        try:
            available.append(ModelResource.from_loaded(jobs.models.get(model_id)))
        except (ModelUnavailableError, UnknownModelError):
            continue  # listed below with its reason (or removed since it was listed)
    unavailable = [
        ModelVersionStatus.from_status(s) for s in jobs.models.version_statuses() if not s.available
    ]
    return ModelList(models=available, unavailable=unavailable)


@router.get(
    "/models/{model_id}",
    response_model=ModelResource,
    responses=MODEL_ERRORS,
    summary="A model card",
)
def get_model(
    model_id: str,
    _: CallerDep,
    jobs: JobServiceDep,
    version: Annotated[str | None, Query(description="default: the newest that loads")] = None,
) -> ModelResource:
    return ModelResource.from_loaded(jobs.model(model_id, version))
