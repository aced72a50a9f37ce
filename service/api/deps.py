"""Dependencies of the routes (``Annotated`` aliases): settings, services, the caller.

Each is ``async``: it only reads the app's state or checks a key (no I/O), so it runs on the
event loop; FastAPI runs a plain ``def`` dependency on a worker thread, a thread hop per
dependency per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request, Response, status

from service.auth import authenticate, authenticate_admin
from service.core.config import Settings
from service.job_service import JobService
from service.runtime import ServiceRuntime


async def get_runtime(request: Request) -> ServiceRuntime:
    return request.app.state.runtime


RuntimeDep = Annotated[ServiceRuntime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_job_service(runtime: RuntimeDep) -> JobService:
    return runtime.jobs


JobServiceDep = Annotated[JobService, Depends(get_job_service)]


APIKeyHeader = Annotated[str | None, Header(description="an API key, when keys are set")]


def caller_of(settings: Settings, x_api_key: str | None) -> str | None:
    """The caller's owner id (SHA-256 of the key); ``None`` when the API has no keys. Admin
    keys are keys too, where the API has keys."""
    keys = settings.api_keys + settings.admin_api_keys if settings.api_keys else ()
    return authenticate(x_api_key, keys)


async def get_caller(request: Request, x_api_key: APIKeyHeader = None) -> str | None:
    return caller_of(request.app.state.runtime.settings, x_api_key)


CallerDep = Annotated[str | None, Depends(get_caller)]


async def get_admin(
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Header(description="an admin key")] = None,
) -> str:
    """The owner id (SHA-256) of the admin key the request carries; 401 or 403 otherwise."""
    return authenticate_admin(x_api_key, settings.admin_api_keys)


AdminDep = Annotated[str, Depends(get_admin)]


@dataclass(frozen=True)
class Submission:
    """What a submission route (``POST`` of a job or a batch) works with."""

    request: Request
    response: Response
    caller: str | None
    jobs: JobService
    settings: Settings

    def answer(self, location: str, finished: bool) -> None:
        """The resource is at ``location``; 200 when ``finished`` (within ``wait``), else the
        route's 202."""
        if finished:
            self.response.status_code = status.HTTP_200_OK
        self.response.headers["Location"] = location


async def get_submission(
    request: Request, response: Response, x_api_key: APIKeyHeader = None
) -> Submission:
    """One dependency with no dependencies of its own (each level costs FastAPI a resolution
    per request): the caller is checked before the body is read."""
    runtime: ServiceRuntime = request.app.state.runtime
    caller = caller_of(runtime.settings, x_api_key)
    return Submission(request, response, caller, runtime.jobs, runtime.settings)


SubmissionDep = Annotated[Submission, Depends(get_submission)]
