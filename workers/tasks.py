"""Celery tasks: each a few lines over :class:`workers.runner.JobRunner`."""

from __future__ import annotations

from functools import cache

from celery.exceptions import SoftTimeLimitExceeded

from workers.app import CERTIFY_JOB_TASK, app, settings
from workers.model_cache import ModelCache, RepositorySource
from workers.runner import JobRunner
from workers.store import RedisJobStore


@cache
def process_runner() -> JobRunner:
    """One runner (store client, model cache) per worker process, built on its first task."""
    return JobRunner(
        RedisJobStore.from_settings(settings),
        ModelCache(
            RepositorySource(settings.model_repository),
            settings.device,
            settings.model_refresh_seconds,
        ),
        time_limit_seconds=settings.task_time_limit_seconds,
        max_attempts=settings.task_max_attempts,
        time_limit_errors=(SoftTimeLimitExceeded,),
    )


@app.task(name=CERTIFY_JOB_TASK)
def certify_job(job_id: str) -> str | None:
    """Run the stored job ``job_id``; its final status."""
    status = process_runner().run(job_id)
    return None if status is None else status.value
