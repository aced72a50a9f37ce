"""``/healthz`` (the process answers) and ``/readyz`` (it can certify now)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import RuntimeDep
from service.schemas import HealthResource
from workers.dispatch import NotReadyError
from workers.model_cache import UnknownModelError

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResource, summary="Liveness")
def healthz() -> HealthResource:
    return HealthResource(status="ok")


@router.get(
    "/readyz",
    response_model=HealthResource,
    responses={503: {"model": HealthResource}},
    summary="Readiness: models loadable and, in distributed mode, Redis and a worker reachable",
)
def readyz(runtime: RuntimeDep) -> HealthResource | JSONResponse:
    try:
        model_ids = runtime.models.model_ids()
        if not model_ids:
            raise NotReadyError("the model repository has no models")
        for model_id in model_ids:
            runtime.models.get(model_id)
        runtime.dispatcher.check_ready()
    except (NotReadyError, UnknownModelError, OSError, ValueError) as error:
        body = HealthResource(status="unavailable", mode=runtime.mode, detail=str(error))
        return JSONResponse(status_code=503, content=body.model_dump())
    return HealthResource(status="ready", mode=runtime.mode)
