"""Settings shared by the gateway and the workers, read from ``HYCAS_*`` environment variables.

The gateway's settings (:class:`service.core.config.Settings`) extend these with the API's
own limits; a worker reads only what it needs to run jobs.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOG_FORMAT = (
    "ts=%(asctime)s level=%(levelname)s process=%(processName)s logger=%(name)s %(message)s"
)
"""The line format of every log: the gateway's, the CLI's and the Celery workers'."""


class ExecutionSettings(BaseSettings):
    """Where jobs, images and results live, and how long a job may run."""

    model_config = SettingsConfigDict(env_prefix="HYCAS_", extra="ignore")

    redis_url: str | None = None
    """Redis for the broker, the result backend and the job store; unset: embedded mode."""
    key_prefix: str = "hycas:"
    """Prefix of the job store's Redis keys (jobs, batches, images)."""
    queue_name: str = "celery"
    """The Celery queue (a Redis list of that name: what an autoscaler watches)."""
    result_ttl_seconds: int = Field(default=86_400, ge=1)
    """How long a finished job (its result or error) stays readable."""
    image_ttl_seconds: int = Field(default=3_600, ge=1)
    """How long a submitted image waits for a worker before the job fails as expired."""
    model_repository: str | Path | None = None
    """Model repository: a folder or an object store's URL (``s3://bucket/models``: see
    :mod:`models.package_store`); unset: the one shipped with the package."""
    model_cache_dir: Path | None = None
    """Where packages of a repository given by URL are mirrored after their SHA-256 was
    checked (one download per version and host); unset: ``hycas-model-cache`` in the
    system's temporary folder."""
    model_refresh_seconds: float = Field(default=10.0, ge=0)
    """How often the repository is listed again, so new versions are used without a restart
    (a request naming a version not yet listed lists it at once)."""
    device: str = "auto"
    """Torch device of certification: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``."""
    worker_pool_size: int = Field(default=1, ge=1)
    """Worker processes of ``hycas worker`` (Celery prefork concurrency); with 1, the worker is
    one process running ``worker_jobs_per_process`` jobs in threads."""
    worker_jobs_per_process: int | None = Field(default=None, ge=1)
    """Jobs one process runs at once, so the batcher has requests to merge (threads of the
    embedded pool, of a one-process ``hycas worker``); default 8 on a GPU, 4 on the CPU."""
    max_forward_batch: int | None = Field(default=None, ge=1)
    """Samples in one merged forward pass of the batcher; default: the model card's
    ``max_forward_batch``, else 1,000."""
    batch_max_delay_ms: float = Field(default=5.0, ge=0)
    """How long the batcher waits for other jobs' samples before a forward pass runs without
    them (it never waits when every running job has its samples in)."""
    task_time_limit_seconds: int = Field(default=600, ge=1)
    """A job running longer fails with ``time_limit_exceeded``."""
    task_max_attempts: int = Field(default=3, ge=1)
    """Deliveries of one job (after worker crashes) before it fails with ``worker_lost``."""
    broker_visibility_timeout_seconds: int | None = None
    """Seconds before an unacknowledged job is redelivered; default: the hard time limit + 60."""
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """``hycas worker`` serves its processes' metrics on this port (``/metrics``)."""
    worker_name: str | None = Field(default=None, min_length=1)
    """The name results show in ``provenance.host``; default: the Celery node name (the host
    name in the embedded pool). Never a process id."""
    redis_ca_file: Path | None = None
    """CA certificates (PEM) that a ``rediss://`` Redis's certificate must chain to; default:
    the system's."""
    broker_restore_interval_seconds: int = Field(default=10, ge=1)
    """How often a worker looks for unacknowledged jobs past the visibility timeout."""
    heartbeat_timeout_seconds: float = Field(default=30.0, gt=0)
    """A running job whose worker has not refreshed its heartbeat for this long is rerun."""
    reaper_interval_seconds: float = Field(default=10.0, gt=0)
    """How often one reaper (among all workers and gateways) looks for lost jobs."""
    max_queued_jobs: int = Field(default=10_000, ge=1)
    """Unfinished (queued or running) jobs accepted at once; beyond it submissions get 429."""
    max_queued_jobs_per_key: int = Field(default=1_000, ge=1)
    """Unfinished jobs of one API key accepted at once."""
    max_queued_samples: int = Field(default=200_000_000, ge=1)
    """Noisy samples planned by all unfinished jobs together (a job weighs n0 + n per method)."""
    max_queued_samples_per_key: int = Field(default=50_000_000, ge=1)
    """Noisy samples planned by the unfinished jobs of one API key."""
    backlog_drain_samples_per_second: float = Field(default=10_000.0, gt=0)
    """The fleet's certification rate, used only to estimate a 429's ``Retry-After``."""

    @property
    def redis_tls_options(self) -> dict[str, Any] | None:
        """TLS for a ``rediss://`` URL, the same for the job store, the Celery broker and its
        result backend: the server's certificate is verified (against ``redis_ca_file`` when
        set); ``None`` for a plain ``redis://`` URL."""
        if self.redis_url is None or not self.redis_url.startswith("rediss://"):
            return None
        options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        if self.redis_ca_file is not None:
            options["ssl_ca_certs"] = str(self.redis_ca_file)
        return options

    @property
    def jobs_per_process(self) -> int:
        """``worker_jobs_per_process``, or its default for the device (8 on CUDA, 4 on CPU)."""
        if self.worker_jobs_per_process is not None:
            return self.worker_jobs_per_process
        from models.devices import resolve_device

        return 8 if resolve_device(self.device).type == "cuda" else 4

    @property
    def task_soft_time_limit_seconds(self) -> int:
        """Celery's soft limit: a backstop behind the runner's own check between batches."""
        return self.task_time_limit_seconds + 2

    @property
    def task_hard_time_limit_seconds(self) -> int:
        """Celery's hard limit: the worker process is killed past it."""
        return self.task_time_limit_seconds + 5

    @property
    def visibility_timeout_seconds(self) -> int:
        """Redelivery delay; above the hard time limit so a running job is never duplicated."""
        if self.broker_visibility_timeout_seconds is not None:
            return self.broker_visibility_timeout_seconds
        return self.task_hard_time_limit_seconds + 60

    @property
    def queued_orphan_grace_seconds(self) -> float:
        """A queued job is re-sent only when its message was missing for this long."""
        return max(self.reaper_interval_seconds, 5.0)

    @property
    def pending_ttl_seconds(self) -> int:
        """TTL of a job that is not finished: it outlives its image, its run and its result."""
        return self.image_ttl_seconds + self.task_hard_time_limit_seconds + self.result_ttl_seconds

    @model_validator(mode="after")
    def _visibility_timeout_above_time_limit(self) -> ExecutionSettings:
        if self.visibility_timeout_seconds <= self.task_hard_time_limit_seconds:
            raise ValueError(
                f"HYCAS_BROKER_VISIBILITY_TIMEOUT_SECONDS={self.visibility_timeout_seconds} must "
                f"exceed the hard task time limit ({self.task_hard_time_limit_seconds} s = "
                "HYCAS_TASK_TIME_LIMIT_SECONDS + 5), or running jobs would be delivered twice"
            )
        return self
