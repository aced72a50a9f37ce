"""``/healthz`` (the process answers) and ``/readyz`` (it can certify now)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import RuntimeDep
from service.schemas import HealthResource, ModelVersionStatus
from workers.dispatch import NotReadyError

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResource, summary="Liveness")
def healthz() -> HealthResource:
    return HealthResource(status="ok")


@router.get(
    "/readyz",
    response_model=HealthResource,
    responses={503: {"model": HealthResource}},
    summary="Readiness: every model has a version that loads and, in distributed mode, Redis "
    "and a worker are reachable; `models` lists each version and whether it loads",
)
def readyz(runtime: RuntimeDep) -> HealthResource | JSONResponse:
    """Ready while every model's default version (its newest that loads) serves: a corrupt
    new version leaves the older one serving, so it is listed and named in ``detail`` but does
    not take the gateway out of service."""
    statuses: list[ModelVersionStatus] = []
    try:
        model_ids = runtime.models.model_ids()
        if not model_ids:
            raise NotReadyError("the model repository has no models")
        statuses = [ModelVersionStatus.from_status(s) for s in runtime.models.version_statuses()]
        unusable = [
            model_id
            for model_id in model_ids
            if not any(s.id == model_id and s.status == "available" for s in statuses)
        ]
        if unusable:
            raise NotReadyError(f"no version of {', '.join(unusable)} loads; {_failing(statuses)}")
        runtime.dispatcher.check_ready()
    except (NotReadyError, OSError, ValueError) as error:
        body = HealthResource(
            status="unavailable", mode=runtime.mode, detail=str(error), models=statuses
        )
        return JSONResponse(status_code=503, content=body.model_dump())
    failing = [s for s in statuses if s.status == "unavailable"]
    return HealthResource(
        status="ready",
        mode=runtime.mode,
        detail=_failing(statuses) if failing else None,
        models=statuses,
    )


def _failing(statuses: list[ModelVersionStatus]) -> str:
    failing = [s for s in statuses if s.status == "unavailable"]
    names = ", ".join(f"{s.id} v{s.version}" for s in failing)
    return f"{len(failing)} model version(s) fail to load: {names}"
