"""``hycas worker`` for the tests: the real command, with the small test model as model source.

Run as ``python -m tests.workers.worker_process worker --pool=solo ...`` with the ``HYCAS_*``
environment of the test; only the model source differs from production (the tests do not
depend on the shipped model repository).
"""

from __future__ import annotations

import sys
from functools import cache

from celery.exceptions import SoftTimeLimitExceeded

import workers.tasks
from service.cli import main
from tests.workers.small_models import SmallModelSource
from workers.app import settings
from workers.model_cache import ModelCache
from workers.runner import JobRunner
from workers.store import RedisJobStore


@cache
def small_model_runner() -> JobRunner:
    return JobRunner(
        RedisJobStore.from_settings(settings),
        ModelCache(SmallModelSource(), "cpu"),
        time_limit_seconds=settings.task_time_limit_seconds,
        max_attempts=settings.task_max_attempts,
        heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
        time_limit_errors=(SoftTimeLimitExceeded,),
    )


if __name__ == "__main__":
    workers.tasks.process_runner = small_model_runner
    sys.exit(main(sys.argv[1:]))
