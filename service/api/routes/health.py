"""``/healthz`` (the process answers) and ``/readyz`` (it can certify now)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import RuntimeDep
from service.schemas import HealthResource, ModelVersionStatus
from workers.dispatch import NotReadyError, NoWorkerAnswered
from workers.model_cache import VersionStatus
from workers.store import JobStore

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
    not take the gateway out of service. A model whose every version was retired was withdrawn
    on purpose and is not required; its versions are listed as ``retired``."""
    statuses: list[ModelVersionStatus] = []
    try:
        model_ids = runtime.models.model_ids()
        if not model_ids:
            raise NotReadyError("the model repository has no models")
        versions = runtime.models.version_statuses()
        statuses = [ModelVersionStatus.from_status(s) for s in versions]
        in_service = [m for m in model_ids if not _withdrawn(m, versions)]
        if not in_service:
            raise NotReadyError("every model's versions are retired: none is in service")
        serving = {s.model_id for s in versions if s.serving}
        unusable = [m for m in in_service if m not in serving]
        if unusable:
            raise NotReadyError(f"no version of {', '.join(unusable)} loads; {_failing(statuses)}")
        try:
            runtime.dispatcher.check_ready()
        except NoWorkerAnswered:
            if not _a_worker_holds_a_job(runtime.store):
                raise
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


HEARTBEAT_LOOKUP_CHUNK = 1000


def _a_worker_holds_a_job(store: JobStore) -> bool:
    """Whether some unfinished job has a live heartbeat: a worker is running it now (and may
    be too busy to answer a ping)."""
    job_ids = store.active_job_ids()
    for start in range(0, len(job_ids), HEARTBEAT_LOOKUP_CHUNK):
        chunk = job_ids[start : start + HEARTBEAT_LOOKUP_CHUNK]
        if any(holder is not None for holder in store.heartbeat_holders(chunk)):
            return True
    return False


def _withdrawn(model_id: str, versions: list[VersionStatus]) -> bool:
    """Whether an administrator withdrew the model: every version of it that loads is retired
    (it need not serve for the gateway to be ready)."""
    own = [s for s in versions if s.model_id == model_id]
    return any(s.retired for s in own) and all(s.retired for s in own if s.available)


def _failing(statuses: list[ModelVersionStatus]) -> str:
    failing = [s for s in statuses if s.status == "unavailable"]
    names = ", ".join(f"{s.id} v{s.version}" for s in failing)
    return f"{len(failing)} model version(s) fail to load: {names}"
