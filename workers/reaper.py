"""The reaper: every accepted job reaches a terminal state, whatever happened to its worker.

A reaper thread runs in every worker process and in the gateway (distributed mode); a lock in
the store (``{prefix}lock:reaper``, held for most of a period) lets one of them act per
period. One pass inspects the index of unfinished jobs:

- ``running`` with no live heartbeat (its worker died, or Celery terminated it on a broker
  connection loss and will not redeliver it): requeued with a new message (the attempt is
  counted when a runner claims it), cancelled if a cancel was requested, or failed with
  ``worker_lost`` after ``HYCAS_TASK_MAX_ATTEMPTS`` claims;
- ``running`` with a cancel requested more than :data:`CANCEL_GRACE_SECONDS` ago (its runner
  checks for cancellation at every batch, so it is stuck or gone): ended ``cancelled``;
- ``queued`` for longer than the orphan grace with no message in the queue: if its message
  is nowhere, it was lost (broker restart, a gateway that died between storing and sending);
  if a worker took it and has not claimed the job in two passes, that worker died between
  taking and claiming (its message would come back only after the visibility timeout). Either
  way the job is sent again;
- an index entry whose job record expired: dropped from the backlog.

Every change is a transaction on the job that first checks the state the pass observed, and
runners fence their writes by attempt, so passes are idempotent and a requeued job's late
runner never writes: each job ends once. A duplicate message (the reaper re-sent a message
that was merely in flight) finds the job claimed, with a live heartbeat, and is dropped.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import KW_ONLY, dataclass, field
from typing import Protocol

from workers import metrics
from workers.config import ExecutionSettings
from workers.dispatch import CeleryDispatcher
from workers.jobs import JobRecord, JobStatus, Progress
from workers.runner import worker_lost_error
from workers.store import JobStore, RedisJobStore

logger = logging.getLogger(__name__)

CANCEL_GRACE_SECONDS = 5.0
"""A running job whose cancel was not honoured this long after it was asked is ended."""

LOCK_NAME = "reaper"
INSPECT_CHUNK = 500


class MessageQueue(Protocol):
    def dispatch(self, job_id: str) -> None: ...

    def job_ids_waiting(self, job_ids: Collection[str]) -> set[str]: ...

    def job_ids_delivered(self, job_ids: Collection[str]) -> set[str]: ...


@dataclass
class ReapReport:
    """What one pass did, by job id."""

    requeued: list[str]
    resent: list[str]
    failed: list[str]
    cancelled: list[str]
    forgotten: list[str]

    @classmethod
    def empty(cls) -> ReapReport:
        return cls([], [], [], [], [])


@dataclass(eq=False)
class Reaper:
    store: JobStore
    queue: MessageQueue
    _: KW_ONLY
    interval_seconds: float
    max_attempts: int
    orphan_grace_seconds: float
    cancel_grace_seconds: float = CANCEL_GRACE_SECONDS
    clock: Callable[[], float] = time.time
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def reap_if_due(self) -> ReapReport | None:
        """One pass if no other reaper made one within the period (``None``: not this time)."""
        if not self.store.acquire_lock(LOCK_NAME, 0.9 * self.interval_seconds):
            return None
        return self.reap()

    def reap(self) -> ReapReport:
        """One pass over the unfinished jobs (see the module's docstring)."""
        report = ReapReport.empty()
        now = self.clock()
        maybe_orphaned: list[JobRecord] = []
        job_ids = self.store.active_job_ids()
        for start in range(0, len(job_ids), INSPECT_CHUNK):
            chunk = job_ids[start : start + INSPECT_CHUNK]
            jobs = self.store.get_jobs(chunk)
            holders = self.store.heartbeat_holders(chunk)
            for job_id, job, holder in zip(chunk, jobs, holders, strict=True):
                if job is None:
                    self.store.forget_active(job_id)
                    report.forgotten.append(job_id)
                elif job.status is JobStatus.RUNNING and holder is None:
                    self._recover(job, report)
                elif job.status is JobStatus.RUNNING and self._cancel_overdue(job, now):
                    self._end(job, JobStatus.CANCELLED, report, unheld_only=False)
                elif (
                    job.status is JobStatus.QUEUED
                    and now - job.last_queued_at >= self.orphan_grace_seconds
                ):
                    maybe_orphaned.append(job)
        if maybe_orphaned:
            self._resend_orphans(maybe_orphaned, report)
        return report

    def _resend_orphans(self, jobs: list[JobRecord], report: ReapReport) -> None:
        job_ids = [job.id for job in jobs]
        waiting = self.queue.job_ids_waiting(job_ids)
        delivered = self.queue.job_ids_delivered(job_ids)
        for job in jobs:
            if job.id in waiting:
                continue
            # Taken but unclaimed: fine for milliseconds; first seen now, wait one more pass.
            unclaimed_mark = f"unclaimed:{job.id}"
            if job.id in delivered and self.store.acquire_lock(
                unclaimed_mark, 10 * self.interval_seconds
            ):
                continue
            self._send_again(job, report, reason="message_lost")

    def _cancel_overdue(self, job: JobRecord, now: float) -> bool:
        asked = job.cancel_requested_at
        return job.cancel_requested and (asked is None or now - asked >= self.cancel_grace_seconds)

    def _recover(self, job: JobRecord, report: ReapReport) -> None:
        """A running job whose runner is gone: end it, or run it again."""
        if job.cancel_requested:
            self._end(job, JobStatus.CANCELLED, report)
        elif job.attempts >= self.max_attempts:
            self._end(job, JobStatus.FAILED, report)
        else:
            self._send_again(job, report, reason="heartbeat_lost")

    def _send_again(self, job: JobRecord, report: ReapReport, reason: str) -> None:
        now = self.clock()

        def requeue(current: JobRecord) -> JobRecord | None:
            if current.status is not job.status or current.attempts != job.attempts:
                return None
            if current.status is JobStatus.QUEUED and current.queued_at != job.queued_at:
                return None
            progress = Progress(samples_planned=current.progress.samples_planned)
            return current.model_copy(
                update={"status": JobStatus.QUEUED, "queued_at": now, "progress": progress}
            )

        stored = self.store.update_unheld_job(job.id, requeue)
        if stored is None or stored.queued_at != now:
            return  # changed meanwhile: claimed, finished or requeued by someone else
        # Sent after the record says queued: if sending fails, a later pass sends it again.
        self.queue.dispatch(job.id)
        runner_lost = reason == "heartbeat_lost"
        (report.requeued if runner_lost else report.resent).append(job.id)
        metrics.JOBS_REAPED.labels(action="requeued" if runner_lost else "resent").inc()
        logger.warning(
            "event=job_requeued job_id=%s reason=%s attempts=%d", job.id, reason, job.attempts
        )

    def _end(
        self, job: JobRecord, status: JobStatus, report: ReapReport, *, unheld_only: bool = True
    ) -> None:
        now = self.clock()
        error = worker_lost_error(job.attempts) if status is JobStatus.FAILED else None

        def end(current: JobRecord) -> JobRecord | None:
            if current.status is not JobStatus.RUNNING or current.attempts != job.attempts:
                return None
            return current.model_copy(update={"status": status, "error": error, "finished_at": now})

        if unheld_only:
            stored = self.store.update_unheld_job(job.id, end)
        else:
            stored = self.store.update_job(job.id, end, drop_heartbeat=True)
        if stored is None or stored.finished_at != now:
            return
        self.store.delete_image(stored.image_key)
        metrics.JOBS.labels(state=status.value).inc()
        action = "failed" if status is JobStatus.FAILED else "cancelled"
        (report.failed if status is JobStatus.FAILED else report.cancelled).append(job.id)
        metrics.JOBS_REAPED.labels(action=action).inc()
        logger.warning(
            "event=job_finished job_id=%s status=%s error_code=%s attempts=%d by=reaper",
            job.id,
            status.value,
            error.code if error else "-",
            job.attempts,
        )

    def start(self) -> None:
        """Reap from a daemon thread every period (with a little jitter) until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hycas-reaper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_seconds * random.uniform(0.9, 1.1)):
            try:
                self.reap_if_due()
            except Exception as error:  # the store or broker is down: try again next period
                logger.warning("event=reaper_pass_failed error=%s", type(error).__name__)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


def reaper_for(
    settings: ExecutionSettings,
    store: RedisJobStore | None = None,
    queue: CeleryDispatcher | None = None,
) -> Reaper:
    """The reaper of a distributed deployment: the Redis store and the Celery queue."""
    store = store or RedisJobStore.from_settings(settings)
    return Reaper(
        store,
        queue or CeleryDispatcher(settings, store.client),
        interval_seconds=settings.reaper_interval_seconds,
        max_attempts=settings.task_max_attempts,
        orphan_grace_seconds=settings.queued_orphan_grace_seconds,
    )
