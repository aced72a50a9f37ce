"""``/v1/models``: the model cards; registering (``POST``) and retiring (``DELETE``) versions
with an admin key."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request

from service.api.deps import AdminDep, CallerDep, JobServiceDep, RuntimeDep
from service.api.routes.jobs import ERRORS
from service.schemas import (
    ErrorResponse,
    ModelList,
    ModelResource,
    ModelVersionResource,
    ModelVersionStatus,
)
from service.uploads import parse_package_upload
from workers.model_cache import ModelUnavailableError, UnknownModelError

router = APIRouter(prefix="/v1", tags=["models"])

MODEL_ERRORS = {
    **ERRORS,
    503: {"model": ErrorResponse, "description": "the version fails its integrity checks"},
}
CHANGE_ERRORS = {
    **ERRORS,
    403: {"model": ErrorResponse, "description": "the key is not an admin key"},
}
REGISTER_ERRORS = {
    **CHANGE_ERRORS,
    409: {"model": ErrorResponse, "description": "the version exists (versions are immutable)"},
    413: {"model": ErrorResponse, "description": "the package exceeds HYCAS_MAX_MODEL_BYTES"},
    415: {"model": ErrorResponse, "description": "not multipart/form-data"},
    422: {
        "model": ErrorResponse,
        "description": "a check failed (card, SHA-256, network, bound); nothing was stored",
    },
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
    summary="A model card and its versions",
)
def get_model(
    model_id: str,
    _: CallerDep,
    jobs: JobServiceDep,
    version: Annotated[str | None, Query(description="default: the newest that loads")] = None,
) -> ModelResource:
    """The card of ``version`` (default: the newest that loads and is not retired) and every
    version of the model with its status and its card's metrics."""
    resource = ModelResource.from_loaded(jobs.model(model_id, version))
    resource.versions = [
        ModelVersionResource.from_detail(d) for d in jobs.models.version_details(model_id)
    ]
    return resource


@router.post(
    "/models",
    response_model=ModelVersionResource,
    status_code=201,
    responses=REGISTER_ERRORS,
    summary="Register a model version (admin key)",
)
async def register_model(
    request: Request, admin: AdminDep, runtime: RuntimeDep
) -> ModelVersionResource:
    """Multipart: ``model.json`` and the weights file it names, or one ``.tar``/``.zip`` of
    them. The card is validated, the weights' SHA-256 checked, the network built and its
    Lipschitz bound recomputed and compared with the card's before the version is stored."""
    settings = runtime.settings
    files = await parse_package_upload(
        request, settings.max_model_bytes, settings.upload_timeout_seconds
    )
    checked = await asyncio.to_thread(runtime.registry.register, files, admin)
    detail = runtime.models.version_detail(checked.card.id, checked.card.version)
    return ModelVersionResource.from_detail(detail)


@router.delete(
    "/models/{model_id}/versions/{version}",
    response_model=ModelVersionResource,
    responses={**CHANGE_ERRORS, 404: {"model": ErrorResponse, "description": "no such version"}},
    summary="Retire a model version (admin key)",
)
def retire_model_version(
    model_id: str, version: str, admin: AdminDep, runtime: RuntimeDep
) -> ModelVersionResource:
    """New requests for the version get 404; jobs already queued for it still finish. Its
    files stay in the repository (retiring again changes nothing)."""
    runtime.registry.retire(model_id, version, admin)
    return ModelVersionResource.from_detail(runtime.models.version_detail(model_id, version))
