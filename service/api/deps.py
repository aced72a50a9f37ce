"""Dependencies of the routes (``Annotated`` aliases): settings, services, the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from service.auth import authenticate
from service.core.config import Settings
from service.runtime import ServiceRuntime
from service.submission import JobService


def get_runtime(request: Request) -> ServiceRuntime:
    return request.app.state.runtime


RuntimeDep = Annotated[ServiceRuntime, Depends(get_runtime)]


def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_job_service(runtime: RuntimeDep) -> JobService:
    return runtime.jobs


JobServiceDep = Annotated[JobService, Depends(get_job_service)]


def get_caller(
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Header(description="an API key, when keys are set")] = None,
) -> str | None:
    """The caller's owner id (SHA-256 of the key); ``None`` when the API has no keys."""
    return authenticate(x_api_key, settings.api_keys)


CallerDep = Annotated[str | None, Depends(get_caller)]
