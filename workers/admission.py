"""Admission control: a bounded backlog of unfinished jobs, counted in jobs and in samples.

The backlog is every job accepted and not yet finished (queued or running), as the job store
counts it, so all gateways sharing a store agree. A job weighs the noisy samples it plans
(``n0 + n`` per sampling method): one of n = 200,000 weighs 200 times one of n = 1,000. The
limits hold over all callers and per API key; a request (one job, or a whole batch) that would
cross one is refused whole with :class:`BacklogFull`, which carries a ``Retry-After`` estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workers.config import ExecutionSettings

MAX_RETRY_AFTER_SECONDS = 3_600


@dataclass(frozen=True)
class BacklogLimits:
    max_jobs: int
    max_jobs_per_key: int
    max_samples: int
    max_samples_per_key: int
    drain_samples_per_second: float

    @classmethod
    def from_settings(cls, settings: ExecutionSettings) -> BacklogLimits:
        return cls(
            max_jobs=settings.max_queued_jobs,
            max_jobs_per_key=settings.max_queued_jobs_per_key,
            max_samples=settings.max_queued_samples,
            max_samples_per_key=settings.max_queued_samples_per_key,
            drain_samples_per_second=settings.backlog_drain_samples_per_second,
        )


@dataclass(frozen=True)
class BacklogUsage:
    """Unfinished jobs and their planned samples: all of them, and those of one key."""

    jobs: int
    samples: int
    key_jobs: int = 0
    key_samples: int = 0


class BacklogFull(Exception):
    """The request would push the backlog past a limit; retry after ``retry_after`` seconds,
    or never (``None``): the request alone is larger than the limit, so waiting cannot help."""

    def __init__(self, message: str, retry_after: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


def _drain_seconds(excess_samples: float, limits: BacklogLimits) -> int:
    """Seconds for the fleet to certify ``excess_samples`` at its configured rate, clamped."""
    seconds = math.ceil(excess_samples / limits.drain_samples_per_second)
    return max(1, min(MAX_RETRY_AFTER_SECONDS, seconds))


def refusal(
    usage: BacklogUsage,
    jobs: int,
    samples: int,
    owner: str | None,
    limits: BacklogLimits,
) -> BacklogFull | None:
    """Why ``jobs`` more jobs planning ``samples`` samples (of ``owner``) cannot be accepted now.

    ``Retry-After`` estimates when enough of the backlog has finished: the samples in excess
    of the limit crossed (for a job limit, the excess jobs times the backlog's mean job
    weight), divided by ``HYCAS_BACKLOG_DRAIN_SAMPLES_PER_SECOND``; between 1 s and an hour.
    """
    mean_weight = usage.samples / usage.jobs if usage.jobs else samples / max(jobs, 1)
    key_mean_weight = usage.key_samples / usage.key_jobs if usage.key_jobs else mean_weight
    checks = [
        (usage.jobs, jobs, limits.max_jobs, "jobs", "HYCAS_MAX_QUEUED_JOBS", mean_weight),
        (usage.samples, samples, limits.max_samples, "samples", "HYCAS_MAX_QUEUED_SAMPLES", 1.0),
    ]
    if owner is not None:
        checks += [
            (
                usage.key_jobs,
                jobs,
                limits.max_jobs_per_key,
                "jobs of this API key",
                "HYCAS_MAX_QUEUED_JOBS_PER_KEY",
                key_mean_weight,
            ),
            (
                usage.key_samples,
                samples,
                limits.max_samples_per_key,
                "samples of this API key",
                "HYCAS_MAX_QUEUED_SAMPLES_PER_KEY",
                1.0,
            ),
        ]
    for used, requested, limit, what, setting, weight in checks:
        if requested > limit:
            return BacklogFull(
                f"this request alone plans {requested:,} {what}, more than the backlog limit "
                f"of {limit:,} ({setting}); send fewer images or fewer samples (n)",
                None,
            )
        if used + requested > limit:
            retry_after = _drain_seconds((used + requested - limit) * weight, limits)
            return BacklogFull(
                f"the backlog is full: {used:,} unfinished {what} plus the {requested:,} of this "
                f"request exceed the limit of {limit:,} ({setting}); retry in about "
                f"{retry_after} s",
                retry_after,
            )
    return None
