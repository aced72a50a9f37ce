"""The job runner: a stored job in, its certificates (or its error) stored back.

One code path for both modes: the embedded pool and the Celery task each call
:meth:`JobRunner.run` with a job id. The runner claims the job, loads its image (by
reference) and its model (cached per process), runs :func:`workers.certification.certify_image`
with a progress callback and a cancellation check, and records the outcome and the metrics.

A job may be delivered more than once (a worker died mid-job and the broker redelivered it, or
the reaper requeued it): a claimed-but-unfinished job whose runner is gone (no live heartbeat)
is run again from the start with the same seed, so it gives the same result; a job another
runner holds, or a finished one, is left alone; after ``max_attempts`` claims it fails.

Exactly once: each claim counts one attempt and sets the job's heartbeat in the same
transaction; the run's progress and its end are written only while the job is still running
under that attempt, so a run that was superseded (requeued, claimed again) never writes. A
store outage does not end a run: progress writes are skipped, and the end is written once
the store is back (retried up to the job's time limit; after that the reaper reruns the job).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable

import redis
import torch

import certify
from workers import metrics
from workers.batching import ModelBatchers
from workers.certification import Certificate, CertificationReport, certify_image
from workers.heartbeat import Holder, JobHeartbeat
from workers.jobs import JobError, JobRecord, JobStatus, Progress
from workers.methods import method as registered_method
from workers.model_cache import ModelCache, UnknownModelError
from workers.store import JobStore

logger = logging.getLogger(__name__)

STORE_RETRY_SECONDS = 0.5
"""Pause between attempts to write a job's end while the store is unreachable."""


def worker_lost_error(attempts: int) -> JobError:
    return JobError(
        code="worker_lost",
        message=f"the job was started {attempts} times and its worker was lost each time "
        "(crash, out of memory or killed); try fewer samples or a smaller batch_size",
    )


def holds(job: JobRecord, attempt: int) -> bool:
    """True while ``job`` is running under the claim that made ``attempt``."""
    return job.status is JobStatus.RUNNING and job.attempts == attempt


class JobProgressTracker:
    """Progress writes and cancellation checks of one running job, both throttled.

    The cancellation check also enforces the job's time limit (``timed_out`` tells the runner
    why it stopped), the runner's shutdown and the claim (``superseded``: the job was requeued
    or claimed again after this run's heartbeat was lost): each stops the certification at its
    next batch. Both tolerate a store outage: the run goes on and writes again later.
    """

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        attempt: int,
        deadline: float,
        interval_seconds: float,
        stopping: threading.Event,
        heartbeat_lost: threading.Event,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.attempt = attempt
        self.deadline = deadline
        self.stopping = stopping
        self.heartbeat_lost = heartbeat_lost
        self.interval_seconds = interval_seconds
        self.timed_out = False
        self.superseded = False
        self._last_write = float("-inf")
        self._last_check = float("-inf")

    def report(self, samples_done: int, samples_planned: int) -> None:
        now = time.monotonic()
        if now - self._last_write < self.interval_seconds:
            return
        self._last_write = now
        progress = Progress(samples_done=samples_done, samples_planned=samples_planned)

        def set_progress(job: JobRecord) -> JobRecord | None:
            if not holds(job, self.attempt):
                return None
            return job.model_copy(update={"progress": progress})

        # Progress is advisory: the next write after a store outage catches up.
        with contextlib.suppress(redis.RedisError):
            self.store.update_job(self.job_id, set_progress)

    def should_cancel(self) -> bool:
        now = time.monotonic()
        if now >= self.deadline:
            self.timed_out = True
            return True
        if self.stopping.is_set():
            return True
        if self.heartbeat_lost.is_set():
            self.superseded = True
            return True
        if now - self._last_check < self.interval_seconds:
            return False
        self._last_check = now
        try:
            job = self.store.get_job(self.job_id)
        except redis.RedisError:
            return False
        if job is None or not holds(job, self.attempt):
            self.superseded = True
            return True
        return job.cancel_requested


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        models: ModelCache,
        *,
        time_limit_seconds: float,
        max_attempts: int,
        heartbeat_timeout_seconds: float = 30.0,
        worker_name: str | None = None,
        progress_interval_seconds: float = 0.25,
        time_limit_errors: tuple[type[BaseException], ...] = (),
        batchers: ModelBatchers | None = None,
    ) -> None:
        """``time_limit_errors``: what the host raises at its own time limit (Celery's soft
        limit), recorded as ``time_limit_exceeded`` like the runner's own deadline.
        ``batchers``: the process's forward batchers; the jobs it runs at once share forward
        passes (default: a batcher per network with the default settings).
        ``worker_name``: the stable name of the worker running jobs (default: the host name),
        recorded in each job's heartbeat."""
        self.store = store
        self.models = models
        self.time_limit_seconds = time_limit_seconds
        self.max_attempts = max_attempts
        self.heartbeat_timeout_seconds = heartbeat_timeout_seconds
        self.worker_name = worker_name or socket.gethostname()
        self.progress_interval_seconds = progress_interval_seconds
        self.time_limit_errors = time_limit_errors
        self.batchers = batchers if batchers is not None else ModelBatchers()
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Cancel the jobs running now at their next batch (the process is shutting down)."""
        self._stopping.set()

    def run(self, job_id: str, worker: str | None = None) -> JobStatus | None:
        """Run the job to an end state and store it; its status after (``None``: no such job).

        ``worker``: who runs it (default: the runner's ``worker_name``). A job that is
        finished, or running under another live runner, is left as it is."""
        holder = Holder.new(worker or self.worker_name)
        job, claimed = self._claim(job_id, holder)
        if job is None or not claimed:
            return None if job is None else job.status
        heartbeat = JobHeartbeat(self.store, job.id, holder.token(), self.heartbeat_timeout_seconds)
        with heartbeat:
            return self._run_claimed(job, heartbeat)

    def _run_claimed(self, job: JobRecord, beat: JobHeartbeat) -> JobStatus:
        started = time.monotonic()
        metrics.JOBS.labels(state=JobStatus.RUNNING.value).inc()
        if job.attempts == 1 and job.started_at is not None:
            metrics.JOB_QUEUE_WAIT.observe(max(0.0, job.started_at - job.created_at))
        logger.info(
            "event=job_started job_id=%s model=%s version=%s attempt=%d",
            job.id,
            job.model_id,
            job.model_version,
            job.attempts,
        )
        with metrics.JOBS_RUNNING.track_inprogress():
            status = self._certify(job, beat)
        metrics.JOB_DURATION.observe(time.monotonic() - started)
        return status

    def _claim(self, job_id: str, holder: Holder) -> tuple[JobRecord | None, bool]:
        """Mark the job running (one more attempt) under ``holder``, or end it if it must not
        run again; the stored job, and whether this run holds it now."""
        now = time.time()
        ended_here = False
        claimed = False

        def claim(job: JobRecord, current_holder: str | None) -> JobRecord | None:
            nonlocal ended_here, claimed
            ended_here = claimed = False
            if job.status.is_terminal:
                return None
            if job.status is JobStatus.RUNNING and current_holder is not None:
                previous = Holder.parse(current_holder)
                if previous is None or not previous.is_gone_from(holder.worker):
                    return None  # a duplicate message: the job's runner is alive
            if job.cancel_requested:
                ended_here = True
                return job.model_copy(update={"status": JobStatus.CANCELLED, "finished_at": now})
            if job.attempts >= self.max_attempts:
                ended_here = True
                error = worker_lost_error(job.attempts)
                return job.model_copy(
                    update={"status": JobStatus.FAILED, "error": error, "finished_at": now}
                )
            claimed = True
            return job.model_copy(
                update={
                    "status": JobStatus.RUNNING,
                    "attempts": job.attempts + 1,
                    "started_at": job.started_at or now,
                }
            )

        job = self.store.claim_job(job_id, claim, holder.token(), self.heartbeat_timeout_seconds)
        if job is not None and ended_here:
            self._record_end(job)
        return job, claimed

    def _certify(self, job: JobRecord, beat: JobHeartbeat) -> JobStatus:
        image = self.store.load_image(job.image_key)
        if image is None:
            return self._fail(
                job,
                "image_expired",
                "the input image expired before a worker started the job "
                f"(HYCAS_IMAGE_TTL_SECONDS={self.store.lifetimes.image_ttl}); submit it again",
            )
        try:
            loaded = self.models.get(job.model_id, job.model_version)
        except UnknownModelError as error:
            return self._fail(job, "unknown_model", str(error))
        except (OSError, ValueError) as error:
            return self._fail(job, "model_load_failed", f"{job.model_id}: {error}")

        tracker = JobProgressTracker(
            self.store,
            job.id,
            job.attempts,
            deadline=time.monotonic() + self.time_limit_seconds,
            interval_seconds=self.progress_interval_seconds,
            stopping=self._stopping,
            heartbeat_lost=beat.lost,
        )
        try:
            with self.batchers.session(loaded, job.id, tracker.should_cancel) as batched:
                report = certify_image(
                    batched,
                    torch.from_numpy(image),
                    job.parameters,
                    job.input,
                    progress=tracker.report,
                    should_cancel=tracker.should_cancel,
                    queue_wait_seconds=(job.started_at or time.time()) - job.created_at,
                    deadline=tracker.deadline,
                )
        except certify.CertificationCancelled:
            if tracker.superseded:
                logger.info("event=job_run_superseded job_id=%s attempt=%d", job.id, job.attempts)
                return self._stored_status(job)
            if tracker.timed_out:
                return self._fail_time_limit(job)
            return self._end(job, JobStatus.CANCELLED)
        except self.time_limit_errors:
            return self._fail_time_limit(job)
        except ValueError as error:
            return self._fail(job, "certification_refused", str(error))
        except Exception:
            logger.exception("event=job_crashed job_id=%s", job.id)
            return self._fail(
                job, "internal_error", "the certification failed unexpectedly; see worker logs"
            )
        return self._end(job, JobStatus.SUCCEEDED, result=report)

    def _stored_status(self, job: JobRecord) -> JobStatus:
        """The job's status as stored now (as this run last knew it if the store is down)."""
        try:
            stored = self.store.get_job(job.id)
        except redis.RedisError:
            return job.status
        return job.status if stored is None else stored.status

    def _fail_time_limit(self, job: JobRecord) -> JobStatus:
        return self._fail(
            job,
            "time_limit_exceeded",
            f"the job ran past the time limit of {self.time_limit_seconds:g} s; "
            "lower n or raise HYCAS_TASK_TIME_LIMIT_SECONDS",
        )

    def _fail(self, job: JobRecord, code: str, message: str) -> JobStatus:
        return self._end(job, JobStatus.FAILED, error=JobError(code=code, message=message))

    def _end(
        self,
        job: JobRecord,
        status: JobStatus,
        *,
        result: CertificationReport | None = None,
        error: JobError | None = None,
    ) -> JobStatus:
        now = time.time()
        written = False

        def finish(current: JobRecord) -> JobRecord | None:
            nonlocal written
            written = False
            if not holds(current, job.attempts):
                return None  # finished, requeued or claimed again meanwhile: not ours to end
            written = True
            update: dict[str, object] = {
                "status": status,
                "result": result,
                "error": error,
                "finished_at": now,
            }
            if status is JobStatus.SUCCEEDED:
                planned = current.progress.samples_planned
                update["progress"] = Progress(samples_done=planned, samples_planned=planned)
            return current.model_copy(update=update)

        stored = self._write_end(job, finish)
        if not written:
            logger.info(
                "event=job_end_refused job_id=%s attempt=%d status=%s stored_status=%s",
                job.id,
                job.attempts,
                status.value,
                "-" if stored is None else stored.status.value,
            )
            return job.status if stored is None else stored.status
        assert stored is not None
        self._record_end(stored)
        return stored.status

    def _write_end(
        self, job: JobRecord, finish: Callable[[JobRecord], JobRecord | None]
    ) -> JobRecord | None:
        """Write the end, waiting out a store outage up to the job's time limit."""
        deadline = time.monotonic() + self.time_limit_seconds
        while True:
            try:
                return self.store.update_job(job.id, finish)
            except redis.RedisError as error:
                if time.monotonic() >= deadline:
                    raise
                logger.warning(
                    "event=job_end_write_retry job_id=%s error=%s", job.id, type(error).__name__
                )
                time.sleep(STORE_RETRY_SECONDS)

    def _record_end(self, job: JobRecord) -> None:
        with contextlib.suppress(redis.RedisError):  # it expires with its TTL
            self.store.delete_image(job.image_key)
        metrics.JOBS.labels(state=job.status.value).inc()
        if job.result is not None:
            self._record_certificates(job.model_id, job.result)
        logger.info(
            "event=job_finished job_id=%s status=%s error_code=%s attempts=%d",
            job.id,
            job.status.value,
            job.error.code if job.error else "-",
            job.attempts,
        )

    @staticmethod
    def _record_certificates(model_id: str, report: CertificationReport) -> None:
        for method, certificate in report.certificates.items():
            if not isinstance(certificate, Certificate):
                continue  # an attack: an upper bound, not a certificate
            metrics.CERTIFICATES.labels(model=model_id, method=method.value).inc()
            # Created at zero with its first certificate, so the abstention rate is 0, not absent.
            abstentions = metrics.ABSTENTIONS.labels(model=model_id, method=method.value)
            if certificate.abstained:
                abstentions.inc()
            else:
                metrics.CERTIFIED_RADIUS.labels(model=model_id, method=method.value).observe(
                    certificate.radius
                )
            if registered_method(method).noisy_samples:
                metrics.NOISY_SAMPLES.labels(model=model_id).inc(certificate.samples)
