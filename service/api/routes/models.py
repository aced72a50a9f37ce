"""``GET /v1/models`` and ``GET /v1/models/{model_id}``: the model cards."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import CallerDep, JobServiceDep
from service.api.routes.jobs import ERRORS
from service.schemas import ModelList, ModelResource

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ModelList, responses=ERRORS, summary="The models")
def list_models(_: CallerDep, jobs: JobServiceDep) -> ModelList:
    loaded = [jobs.model(model_id) for model_id in jobs.models.model_ids()]
    return ModelList(models=[ModelResource.from_loaded(m) for m in loaded])


@router.get(
    "/models/{model_id}", response_model=ModelResource, responses=ERRORS, summary="A model card"
)
def get_model(
    model_id: str,
    _: CallerDep,
    jobs: JobServiceDep,
    version: Annotated[str | None, Query(description="default: the latest")] = None,
) -> ModelResource:
    return ModelResource.from_loaded(jobs.model(model_id, version))
