"""How the gateway hands a stored job to something that runs it.

- :class:`EmbeddedDispatcher`: a pool of threads in the gateway process (embedded mode);
- :class:`CeleryDispatcher`: a Celery message carrying only the job id (distributed mode).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import redis

from workers.config import ExecutionSettings
from workers.runner import JobRunner

logger = logging.getLogger(__name__)

KOMBU_UNACKED_KEY = "unacked"
"""Kombu's Redis hash of messages delivered to a worker and not yet acknowledged."""

JOB_ID_PATTERN = re.compile(rb"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
"""A job id (a hex UUID) as it appears in a task message's ``argsrepr`` header."""

MESSAGE_SCAN_CHUNK = 1_000


class NotReadyError(RuntimeError):
    """The dispatcher cannot run jobs now; the message says why."""


class NoWorkerAnswered(NotReadyError):
    """No worker answered the broker's ping. A worker busy with a job in its only thread
    (the ``solo`` pool) cannot answer; its job's live heartbeat shows it is there."""


class JobDispatcher(Protocol):
    def dispatch(self, job_id: str) -> None: ...

    def queue_length(self) -> int:
        """Jobs dispatched and not yet started."""
        ...

    def check_ready(self) -> None:
        """Raise :class:`NotReadyError` unless jobs dispatched now would run."""
        ...

    def close(self) -> None: ...


class EmbeddedDispatcher:
    """Runs jobs on ``pool_size`` threads of this process."""

    def __init__(self, runner: JobRunner, pool_size: int) -> None:
        self.runner = runner
        self._pool = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="hycas-job")
        self._lock = threading.Lock()
        self._waiting = 0

    def dispatch(self, job_id: str) -> None:
        with self._lock:
            self._waiting += 1
        future = self._pool.submit(self._run, job_id)
        future.add_done_callback(self._log_crash)

    def _run(self, job_id: str) -> None:
        with self._lock:
            self._waiting -= 1
        self.runner.run(job_id)

    @staticmethod
    def _log_crash(future: Future[None]) -> None:
        if future.cancelled():  # dropped by close() before it started: nothing crashed
            return
        error = future.exception()
        if error is not None:
            logger.error("event=job_runner_crashed error=%s", type(error).__name__, exc_info=error)

    def queue_length(self) -> int:
        with self._lock:
            return self._waiting

    def check_ready(self) -> None:
        """The pool is part of this process: ready while it is open."""

    def close(self) -> None:
        """Drop the jobs not started; running ones stop (cancelled) at their next batch."""
        self.runner.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)


class CeleryDispatcher:
    """Sends ``hycas.certify_job(job_id)`` to the Celery queue in Redis."""

    def __init__(self, settings: ExecutionSettings, client: redis.Redis) -> None:
        # Imported here: the embedded gateway never loads Celery.
        from workers.app import CERTIFY_JOB_TASK, create_celery_app

        self.queue_name = settings.queue_name
        self.task_name = CERTIFY_JOB_TASK
        self.celery = create_celery_app(settings)
        self.client = client

    def dispatch(self, job_id: str) -> None:
        # Results live in the job store: no subscription to a Celery result that nobody reads
        # (it would also hide a broker outage behind the result backend's RuntimeError).
        self.celery.send_task(
            self.task_name, args=[job_id], queue=self.queue_name, ignore_result=True
        )

    def queue_length(self) -> int:
        return int(self.client.llen(self.queue_name))

    def job_ids_waiting(self, job_ids: Collection[str]) -> set[str]:
        """Those of ``job_ids`` that have a message waiting in the queue."""
        found: set[bytes] = set()
        start = 0
        while True:
            messages = self.client.lrange(self.queue_name, start, start + MESSAGE_SCAN_CHUNK - 1)
            for message in messages:
                found.update(JOB_ID_PATTERN.findall(message))
            if len(messages) < MESSAGE_SCAN_CHUNK:
                break
            start += MESSAGE_SCAN_CHUNK
        return {job_id for job_id in job_ids if job_id.encode() in found}

    def job_ids_delivered(self, job_ids: Collection[str]) -> set[str]:
        """Those of ``job_ids`` whose message a worker took and has not acknowledged (reserved
        or running; or held by a worker that died, until the visibility timeout)."""
        found: set[bytes] = set()
        for _, message in self.client.hscan_iter(KOMBU_UNACKED_KEY, count=MESSAGE_SCAN_CHUNK):
            found.update(JOB_ID_PATTERN.findall(message))
        return {job_id for job_id in job_ids if job_id.encode() in found}

    def check_ready(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as error:
            raise NotReadyError(f"Redis is not reachable: {type(error).__name__}") from error
        from kombu.exceptions import KombuError  # with Celery, only in distributed mode

        try:
            answers = self.celery.control.ping(timeout=1.0)
        except (redis.RedisError, OSError, KombuError) as error:
            # The first ping after Redis came back may meet the broker's stale connection.
            raise NotReadyError(f"the broker is not reachable: {type(error).__name__}") from error
        if not answers:
            raise NoWorkerAnswered("no Celery worker answered a ping within 1 s")

    def close(self) -> None:
        self.celery.close()
