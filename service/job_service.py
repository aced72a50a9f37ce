"""Jobs and batches as the API sees them: validate, decode, store by reference, dispatch.

Everything a route does besides parsing its request lives here, so the routes stay thin
and the same rules hold for single jobs and batch items.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator

import redis
from kombu.exceptions import OperationalError

from service.auth import may_access
from service.core.config import Settings
from service.decode_budget import DecodeBudget
from service.errors import (
    Conflict,
    ModelUnavailable,
    NotFound,
    ParameterOutOfBounds,
    QueueUnavailable,
    ServiceError,
    TooManyRequests,
    UnknownModel,
)
from service.imaging import DecodedImage
from service.job_inputs import ImageUpload, decode_upload, resolve_parameters, strict_inputs
from service.schemas import CertifyOptions
from workers import metrics
from workers.admission import BacklogFull, BacklogLimits
from workers.certification import CertificationParameters
from workers.dispatch import JobDispatcher
from workers.embedded_store import JobEndSignals, wait_until
from workers.jobs import BatchItem, BatchRecord, JobError, JobRecord, JobStatus, Progress
from workers.model_cache import (
    LoadedModel,
    ModelCache,
    ModelUnavailableError,
    UnknownModelError,
)
from workers.store import JobStore

logger = logging.getLogger(__name__)

WAIT_POLL_SECONDS = (0.002, 0.05)
"""A waiting request looks at its job after 2 ms, then 1.5 times later each time, at most every
50 ms: a margin certificate answers in milliseconds, a long job costs a read per 50 ms."""


def wait_polls() -> Iterator[float]:
    """The pauses between looks at a job a request waits for (see :data:`WAIT_POLL_SECONDS`)."""
    pause, longest = WAIT_POLL_SECONDS
    while True:
        yield pause
        pause = min(longest, pause * 1.5)


def batch_finished(jobs: list[JobRecord | None]) -> bool:
    """No job of the batch is queued or running (an expired one is not)."""
    return all(job is None or job.status.is_terminal for job in jobs)


DISPATCH_ERRORS = (OperationalError, redis.RedisError, OSError)
"""What sending a job's message raises when the broker is down or refuses (kombu wraps most
transport errors in its ``OperationalError``; ``ConnectionError`` is an ``OSError``)."""


class JobService:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        dispatcher: JobDispatcher,
        models: ModelCache,
        job_ends: JobEndSignals | None = None,
    ) -> None:
        """``job_ends``: the signals of a store in this process that says when jobs end
        (embedded mode); a request waiting for its jobs then wakes when they end instead of
        polling the store."""
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher
        self.models = models
        self.job_ends = job_ends
        self.backlog_limits = BacklogLimits.from_settings(settings)
        self.decode_budget = DecodeBudget(settings.max_decode_bytes)

    def model(self, model_id: str, version: str | None = None) -> LoadedModel:
        """The model new requests use: ``version``, or the newest that loads; a retired
        version is unknown to them (404), though jobs queued before still run it."""
        try:
            loaded = self.models.get(model_id, version)
        except UnknownModelError as error:
            raise UnknownModel(str(error)) from None
        except ModelUnavailableError as error:
            raise ModelUnavailable(str(error)) from None
        if self.models.is_retired(loaded.model_id, loaded.version):
            raise UnknownModel(
                f"model {model_id!r} version {loaded.version} was retired; its versions in "
                f"service are {self.models.active_versions(model_id)}"
            )
        return loaded

    def _new_job(
        self,
        decoded: DecodedImage,
        loaded: LoadedModel,
        parameters: CertificationParameters,
        owner: str | None,
        batch_id: str | None,
    ) -> JobRecord:
        job_id = uuid.uuid4().hex
        self.store.save_image(job_id, decoded.tensor)
        job = JobRecord(
            id=job_id,
            model_id=loaded.model_id,
            model_version=loaded.version,
            parameters=parameters,
            input=decoded.description,
            image_key=job_id,
            owner=owner,
            batch_id=batch_id,
            progress=Progress(samples_planned=parameters.total_samples_planned),
        )
        return job

    def _admit(self, jobs: list[JobRecord]) -> None:
        """Store the request's jobs if the backlog has room for all of them; else drop their
        images and refuse it whole (429 with ``Retry-After``)."""
        try:
            self.store.admit_jobs(jobs, self.backlog_limits)
        except BacklogFull as full:
            for job in jobs:
                self.store.delete_image(job.image_key)
            if full.retry_after is None:
                raise ParameterOutOfBounds(full.message, code="exceeds_backlog_limit") from None
            logger.info("event=backlog_full jobs=%d retry_after=%d", len(jobs), full.retry_after)
            raise TooManyRequests(full.message, retry_after=full.retry_after) from None

    def _dispatch(self, jobs: list[JobRecord]) -> None:
        """Send every job's message; when the broker fails, the request's jobs end ``failed``
        with ``queue_unavailable`` (none waits as ``queued`` with no message) and it is 503."""
        for job in jobs:
            try:
                self.dispatcher.dispatch(job.id)
            except DISPATCH_ERRORS as error:
                logger.error(
                    "event=dispatch_failed job_id=%s batch_id=%s error=%s",
                    job.id,
                    job.batch_id or "-",
                    type(error).__name__,
                )
                self._abandon(jobs)
                raise QueueUnavailable(
                    "the job queue (the Redis broker) cannot be reached; nothing was queued, "
                    "send the request again in a moment"
                ) from None
            self._log_queued(job)

    def _abandon(self, jobs: list[JobRecord]) -> None:
        """Jobs of a refused request: queued ones fail (their images dropped), running ones
        (sent before the broker failed, already taken by a worker) are asked to cancel."""
        failure = JobError(
            code="queue_unavailable", message="the job could not be sent to the job queue"
        )
        now = time.time()

        def abandon(job: JobRecord) -> JobRecord | None:
            if job.status is JobStatus.QUEUED:
                update = {"status": JobStatus.FAILED, "error": failure, "finished_at": now}
                return job.model_copy(update=update)
            if job.status is JobStatus.RUNNING:
                return job.model_copy(update={"cancel_requested": True})
            return None

        for job in jobs:
            try:
                record = self.store.update_job(job.id, abandon)
                if record is not None and record.status is JobStatus.FAILED:
                    self.store.delete_image(job.image_key)
                    metrics.JOBS.labels(state=JobStatus.FAILED.value).inc()
            except redis.RedisError as error:
                # The store shares the broker's outage; the job stays for the reaper.
                logger.error(
                    "event=abandon_failed job_id=%s error=%s", job.id, type(error).__name__
                )

    def _log_queued(self, job: JobRecord) -> None:
        metrics.JOBS.labels(state=JobStatus.QUEUED.value).inc()
        logger.info(
            "event=job_queued job_id=%s batch_id=%s model=%s version=%s format=%s shape=%s "
            "input_sha256=%s methods=%s n=%d",
            job.id,
            job.batch_id or "-",
            job.model_id,
            job.model_version,
            job.input.format,
            "x".join(map(str, job.input.shape)),
            job.input.sha256,
            ",".join(m.value for m in job.parameters.methods),
            job.parameters.n,
        )

    def submit(
        self, model_id: str, options: CertifyOptions, upload: ImageUpload, owner: str | None
    ) -> JobRecord:
        loaded = self.model(model_id, options.version)
        parameters = resolve_parameters(options, loaded, self.settings)
        strict = strict_inputs(options, self.settings)
        decoded = decode_upload(
            upload,
            loaded,
            self.settings.max_image_pixels,
            strict=strict,
            budget=self.decode_budget,
        )
        job = self._new_job(decoded, loaded, parameters, owner, batch_id=None)
        self._admit([job])
        self._dispatch([job])
        return job

    def submit_batch(
        self,
        model_id: str,
        options: CertifyOptions,
        uploads: list[ImageUpload],
        owner: str | None,
    ) -> BatchRecord:
        """All images are decoded before any job is stored: a bad item refuses the batch."""
        loaded = self.model(model_id, options.version)
        parameters = resolve_parameters(options, loaded, self.settings)
        decoded = []
        strict = strict_inputs(options, self.settings)
        for index, upload in enumerate(uploads):
            try:
                decoded.append(
                    decode_upload(
                        upload,
                        loaded,
                        self.settings.max_image_pixels,
                        strict=strict,
                        budget=self.decode_budget,
                    )
                )
            except ServiceError as error:
                error.message = f"image {index}: {error.message}"
                raise
        batch_id = uuid.uuid4().hex
        jobs = [self._new_job(d, loaded, parameters, owner, batch_id) for d in decoded]
        self._admit(jobs)
        batch = BatchRecord(
            id=batch_id,
            model_id=loaded.model_id,
            model_version=loaded.version,
            owner=owner,
            items=tuple(
                BatchItem(index=index, job_id=job.id, filename=upload.filename)
                for index, (job, upload) in enumerate(zip(jobs, uploads, strict=True))
            ),
        )
        self.store.create_batch(batch)
        self._dispatch(jobs)
        return batch

    def job(self, job_id: str, owner: str | None) -> JobRecord:
        job = self.store.get_job(job_id)
        if job is None or not may_access(job.owner, owner):
            raise NotFound(f"no job {job_id} (it never existed, expired, or is not yours)")
        return job

    async def wait_for(self, job_id: str, owner: str | None, seconds: float) -> JobRecord:
        """The job once it finished, or as it is after ``seconds``."""
        seconds = min(seconds, self.settings.max_wait_seconds)
        if self.job_ends is not None:
            return await wait_until(
                self.job_ends,
                (job_id,),
                lambda: self.job(job_id, owner),
                lambda job: job.status.is_terminal,
                seconds,
            )
        deadline = time.monotonic() + seconds
        job = self.job(job_id, owner)
        pauses = wait_polls()
        while not job.status.is_terminal and time.monotonic() < deadline:
            await asyncio.sleep(next(pauses))
            # An in-memory store is read on the loop; a Redis round trip must not block it.
            if self.store.in_memory:
                job = self.job(job_id, owner)
            else:
                job = await asyncio.to_thread(self.job, job_id, owner)
        return job

    async def wait_for_batch(
        self, batch_id: str, owner: str | None, seconds: float
    ) -> tuple[BatchRecord, list[JobRecord | None]]:
        """The batch once no item is queued or running, or as it is after ``seconds``."""
        seconds = min(seconds, self.settings.max_wait_seconds)
        if self.job_ends is not None:
            batch, jobs = self.batch(batch_id, owner)
            return await wait_until(
                self.job_ends,
                [item.job_id for item in batch.items],
                lambda: self.batch(batch_id, owner),
                lambda state: batch_finished(state[1]),
                seconds,
            )
        deadline = time.monotonic() + seconds
        batch, jobs = await asyncio.to_thread(self.batch, batch_id, owner)
        pauses = wait_polls()
        while not batch_finished(jobs) and time.monotonic() < deadline:
            await asyncio.sleep(next(pauses))
            if self.store.in_memory:
                batch, jobs = self.batch(batch_id, owner)
            else:
                batch, jobs = await asyncio.to_thread(self.batch, batch_id, owner)
        return batch, jobs

    def cancel(self, job_id: str, owner: str | None) -> JobRecord:
        """A queued job is cancelled now; a running one stops at its next batch."""
        self.job(job_id, owner)
        now = time.time()
        cancelled_while_queued = False

        def request_cancel(job: JobRecord) -> JobRecord | None:
            nonlocal cancelled_while_queued
            cancelled_while_queued = False
            if job.status.is_terminal or job.cancel_requested:
                return None
            if job.status is JobStatus.QUEUED:
                cancelled_while_queued = True
                update = {"status": JobStatus.CANCELLED, "finished_at": now}
                return job.model_copy(update={**update, "cancel_requested": True})
            return job.model_copy(update={"cancel_requested": True, "cancel_requested_at": now})

        job = self.store.update_job(job_id, request_cancel)
        if job is None:
            raise NotFound(f"no job {job_id} (it expired)")
        if job.status.is_terminal and not job.cancel_requested:
            raise Conflict(
                f"job {job_id} already {job.status.value}; only queued or running jobs can be "
                "cancelled",
                code="job_finished",
            )
        if cancelled_while_queued:
            self.store.delete_image(job.image_key)
            metrics.JOBS.labels(state=JobStatus.CANCELLED.value).inc()
        logger.info("event=job_cancel_requested job_id=%s status=%s", job.id, job.status.value)
        return job

    def batch(self, batch_id: str, owner: str | None) -> tuple[BatchRecord, list[JobRecord | None]]:
        batch = self.store.get_batch(batch_id)
        if batch is None or not may_access(batch.owner, owner):
            raise NotFound(f"no batch {batch_id} (it never existed, expired, or is not yours)")
        return batch, self.store.get_jobs([item.job_id for item in batch.items])
