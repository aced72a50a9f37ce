"""Celery tasks: each a few lines over :class:`workers.runner.JobRunner`."""

from __future__ import annotations

from functools import cache

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_ready, worker_shutdown

from workers.app import CERTIFY_JOB_TASK, app, settings
from workers.batching import ModelBatchers
from workers.model_cache import ModelCache, RepositorySource
from workers.reaper import Reaper, reaper_for
from workers.runner import JobRunner
from workers.store import RedisJobStore


@cache
def process_runner() -> JobRunner:
    """One runner (store client, model cache) per worker process, built on its first task."""
    return JobRunner(
        RedisJobStore.from_settings(settings),
        ModelCache(
            RepositorySource(settings.model_repository, settings.model_cache_dir),
            settings.device,
            settings.model_refresh_seconds,
        ),
        time_limit_seconds=settings.task_time_limit_seconds,
        max_attempts=settings.task_max_attempts,
        heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
        time_limit_errors=(SoftTimeLimitExceeded,),
        batchers=ModelBatchers.from_settings(settings),
    )


@cache
def worker_reaper() -> Reaper:
    """The worker's reaper thread (in its main process, which outlives its pool's children)."""
    return reaper_for(settings)


@worker_ready.connect
def _start_reaper(**_: object) -> None:
    worker_reaper().start()


@worker_shutdown.connect
def _stop_reaper(**_: object) -> None:
    worker_reaper().stop()


@app.task(name=CERTIFY_JOB_TASK, bind=True)
def certify_job(task: Task, job_id: str) -> str | None:
    """Run the stored job ``job_id`` on this worker (its Celery node name); its final status."""
    status = process_runner().run(job_id, worker=task.request.hostname)
    return None if status is None else status.value
