"""The records a job store keeps: jobs, their parameters and inputs, and batches of jobs.

Records are pydantic models so that the Redis store and the in-memory store keep exactly the
same JSON, and the gateway serves them without a second definition.
"""

from __future__ import annotations

import enum
import time

from pydantic import BaseModel, ConfigDict, Field

from service.imaging.description import InputDescription
from workers.certification import (
    CertificationParameters,
    CertificationReport,
)


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobError(BaseModel):
    code: str
    message: str


class Progress(BaseModel):
    samples_done: int = 0
    samples_planned: int


class JobRecord(BaseModel):
    """One certification of one image: its state, progress and outcome."""

    model_config = ConfigDict(frozen=True)

    id: str
    status: JobStatus = JobStatus.QUEUED
    model_id: str
    model_version: str
    parameters: CertificationParameters
    input: InputDescription
    image_key: str
    """Key of the stored input tensor; images travel by reference, never in task messages."""
    owner: str | None = None
    """SHA-256 of the API key that created the job (``None`` when the API has no keys)."""
    batch_id: str | None = None
    progress: Progress
    result: CertificationReport | None = None
    error: JobError | None = None
    cancel_requested: bool = False
    cancel_requested_at: float | None = None
    attempts: int = 0
    """Claims by a runner so far (more than one after a worker was lost); each claim fences
    the writes of the ones before it."""
    created_at: float = Field(default_factory=time.time)
    queued_at: float | None = None
    """When a message to run the job was last sent, if after ``created_at`` (a requeue)."""
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def samples_weight(self) -> int:
        """What the job weighs in the backlog: the noisy samples it plans."""
        return self.progress.samples_planned

    @property
    def last_queued_at(self) -> float:
        return self.queued_at if self.queued_at is not None else self.created_at


class BatchItem(BaseModel):
    index: int
    job_id: str
    filename: str | None = None


class BatchRecord(BaseModel):
    """Many images certified with one model and shared parameters: one job per image."""

    model_config = ConfigDict(frozen=True)

    id: str
    model_id: str
    model_version: str
    owner: str | None = None
    items: tuple[BatchItem, ...]
    created_at: float = Field(default_factory=time.time)
