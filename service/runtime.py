"""What the gateway runs on, built once per app from its settings.

Embedded mode (no ``HYCAS_REDIS_URL``): an in-memory store and a pool of job threads in this
process, sharing its model cache. Distributed mode: the Redis store and the Celery queue;
the gateway reads the models' cards (weights checked against their SHA-256, no network
built: :class:`workers.model_cache.RepositoryCardSource`), and runs a reaper thread
(:mod:`workers.reaper`) beside the workers' ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.package_store import PackageStore
from service.core.config import Settings
from service.job_service import JobService
from service.model_registry import ModelRegistry
from workers.batching import ModelBatchers
from workers.dispatch import CeleryDispatcher, EmbeddedDispatcher, JobDispatcher
from workers.embedded_store import JobEndSignals, SignallingJobStore
from workers.model_cache import ModelCache, ModelSource, RepositoryCardSource, RepositorySource
from workers.reaper import Reaper, reaper_for
from workers.runner import JobRunner
from workers.store import JobStore, RedisJobStore, StoreLifetimes


@dataclass
class ServiceRuntime:
    settings: Settings
    store: JobStore
    dispatcher: JobDispatcher
    models: ModelCache
    jobs: JobService
    registry: ModelRegistry
    reaper: Reaper | None = None

    @property
    def mode(self) -> str:
        return "distributed" if self.settings.distributed else "embedded"

    def close(self) -> None:
        if self.reaper is not None:
            self.reaper.stop()
        self.dispatcher.close()


def create_runtime(settings: Settings, model_source: ModelSource | None = None) -> ServiceRuntime:
    """``model_source``: where models come from; default: the repository of the settings."""
    store: JobStore
    dispatcher: JobDispatcher
    job_ends: JobEndSignals | None = None
    if settings.redis_url is None:
        source = model_source or RepositorySource(
            settings.model_repository, settings.model_cache_dir
        )
        models = ModelCache(source, settings.device, settings.model_refresh_seconds)
        # The jobs run in this process: a request waiting for one wakes when it ends.
        signalling_store = SignallingJobStore(StoreLifetimes.from_settings(settings))
        store = signalling_store
        job_ends = signalling_store.job_ends
        runner = JobRunner(
            store,
            models,
            time_limit_seconds=settings.task_time_limit_seconds,
            max_attempts=settings.task_max_attempts,
            heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
            batchers=ModelBatchers.from_settings(settings),
        )
        # One process: its jobs share the model and its forward batcher.
        pool_size = max(settings.worker_pool_size, settings.jobs_per_process)
        dispatcher = EmbeddedDispatcher(runner, pool_size)
        reaper = None
    else:
        source = model_source or RepositoryCardSource(
            settings.model_repository, settings.model_cache_dir
        )
        models = ModelCache(source, "cpu", settings.model_refresh_seconds)
        redis_store = RedisJobStore.from_settings(settings)
        store = redis_store
        celery_dispatcher = CeleryDispatcher(settings, redis_store.client)
        dispatcher = celery_dispatcher
        reaper = reaper_for(settings, redis_store, celery_dispatcher)
        reaper.start()
    jobs = JobService(settings, store, dispatcher, models, job_ends)
    # Only a repository of its own is changed over the API: never the shipped one, nor models
    # a caller handed in.
    owned = model_source is None and settings.model_repository is not None
    registry = ModelRegistry(PackageStore(settings.model_repository) if owned else None, models)
    return ServiceRuntime(settings, store, dispatcher, models, jobs, registry, reaper)
