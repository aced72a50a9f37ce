"""The Celery app, configured by object from :class:`workers.config.ExecutionSettings`.

``celery -A workers.app worker`` (or ``hycas worker``) runs it with the ``HYCAS_*`` settings
of its environment. Long certifications shape the configuration: a job is acknowledged only
after it ran (late acks) and put back when its worker process dies; each worker process
reserves one job at a time; the broker redelivers an unacknowledged job only after a
visibility timeout longer than the hard time limit, so a running job is never duplicated.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import celeryd_after_setup, worker_process_shutdown

from workers import broker, identity
from workers.config import LOG_FORMAT, ExecutionSettings

CERTIFY_JOB_TASK = "hycas.certify_job"


class CeleryConfig:
    """Celery settings (lowercase names) derived from the service's settings."""

    def __init__(self, settings: ExecutionSettings) -> None:
        self.broker_url = settings.redis_url
        self.broker_transport = broker.TRANSPORT  # kombu's Redis transport, one race closed
        self.result_backend = settings.redis_url
        self.result_expires = settings.result_ttl_seconds
        self.result_backend_transport_options = {"global_keyprefix": settings.key_prefix}
        self.broker_transport_options = {
            "visibility_timeout": settings.visibility_timeout_seconds,
            "unacked_restore_interval": settings.broker_restore_interval_seconds,
            "unacked_restore_throttle": 1,
        }
        self.broker_connection_retry_on_startup = True
        if settings.redis_tls_options is not None:  # rediss://: kombu and the backend need it
            self.broker_use_ssl = settings.redis_tls_options
            self.redis_backend_use_ssl = settings.redis_tls_options
        self.task_default_queue = settings.queue_name
        self.task_serializer = "json"
        self.result_serializer = "json"
        self.accept_content = ["json"]
        self.task_acks_late = True
        self.task_reject_on_worker_lost = True
        self.worker_cancel_long_running_tasks_on_connection_loss = True
        self.worker_prefetch_multiplier = 1
        self.worker_concurrency = settings.worker_pool_size
        self.task_soft_time_limit = settings.task_soft_time_limit_seconds
        self.task_time_limit = settings.task_hard_time_limit_seconds
        self.worker_log_format = LOG_FORMAT
        self.worker_task_log_format = LOG_FORMAT
        self.include = ["workers.tasks"]


def create_celery_app(settings: ExecutionSettings) -> Celery:
    app = Celery("hycas")
    app.config_from_object(CeleryConfig(settings))
    return app


# In the worker's main process, before its pool forks: every pool process inherits the name.
celeryd_after_setup.connect(identity.remember_celery_node_name)


@worker_process_shutdown.connect
def _forget_live_gauges(pid: int | None = None, **_: object) -> None:
    """In multiprocess metrics mode, drop the gauges of a worker process that exits."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


settings = ExecutionSettings()
app = create_celery_app(settings)
