"""The embedded store wakes a request waiting for its job when the job ends (no polling)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.workers.records import job_record
from workers import embedded_store
from workers.embedded_store import SignallingJobStore, wait_until
from workers.jobs import JobRecord, JobStatus
from workers.store import StoreLifetimes

LIFETIMES = StoreLifetimes(image_ttl=60, pending_ttl=120, result_ttl=60)


def ended(job: JobRecord | None) -> bool:
    return job is not None and job.status.is_terminal


def to(status: JobStatus):
    return lambda job: job.model_copy(update={"status": status})


@pytest.fixture
def store(monkeypatch) -> SignallingJobStore:
    # No fallback poll within a test's time: a waiter that wakes was woken by the signal.
    monkeypatch.setattr(embedded_store, "FALLBACK_POLL_SECONDS", 3600.0)
    return SignallingJobStore(LIFETIMES)


def wait_for_end(store: SignallingJobStore, job_ids: list[str], end, seconds: float = 30.0):
    """Wait (on a fresh loop) for all ``job_ids`` to end while ``end`` runs in a thread once
    the wait has begun."""

    async def scenario():
        loop = asyncio.get_running_loop()
        waiting = wait_until(
            store.job_ends,
            job_ids,
            lambda: store.get_jobs(job_ids),
            lambda jobs: all(ended(job) for job in jobs),
            seconds,
        )
        task = asyncio.ensure_future(waiting)
        await asyncio.sleep(0.01)
        assert not task.done()
        thread = threading.Thread(target=end)
        await loop.run_in_executor(None, thread.start)
        result = await asyncio.wait_for(task, 20)
        thread.join()
        return result

    return asyncio.run(scenario())


@pytest.mark.parametrize(
    "end",
    [
        lambda store, job: store.update_job(job.id, to(JobStatus.SUCCEEDED)),
        lambda store, job: store.update_unheld_job(job.id, to(JobStatus.CANCELLED)),
        lambda store, job: store.claim_job(
            job.id, lambda j, _holder: j.model_copy(update={"status": JobStatus.FAILED}), "h", 5
        ),
    ],
    ids=["update", "unheld-update", "claim"],
)
def test_a_waiter_wakes_when_its_job_ends_whatever_store_write_ends_it(store, end):
    job = job_record()
    store.create_job(job)
    jobs = wait_for_end(store, [job.id], lambda: end(store, job))
    assert ended(jobs[0])
    assert not store.job_ends._waiters  # the waiter left when it was done


def test_a_batch_waiter_wakes_only_once_every_job_ended(store):
    first, second = job_record(), job_record()
    store.create_job(first)
    store.create_job(second)

    def end_both() -> None:
        store.update_job(first.id, to(JobStatus.SUCCEEDED))
        store.update_job(second.id, to(JobStatus.RUNNING))  # not an end: no wake-up needed
        store.update_job(second.id, to(JobStatus.FAILED))

    jobs = wait_for_end(store, [first.id, second.id], end_both)
    assert [job.status for job in jobs] == [JobStatus.SUCCEEDED, JobStatus.FAILED]


def wait_alone(store: SignallingJobStore, job_id: str, seconds: float) -> JobRecord | None:
    """Wait for ``job_id`` with nothing else happening (at most 5 s of real time)."""
    waiting = wait_until(store.job_ends, [job_id], lambda: store.get_job(job_id), ended, seconds)
    return asyncio.run(asyncio.wait_for(waiting, 5))


def test_an_end_written_before_the_wait_is_read_at_once(store):
    job = job_record()
    store.create_job(job)
    store.update_job(job.id, to(JobStatus.SUCCEEDED))
    assert wait_alone(store, job.id, 30).status is JobStatus.SUCCEEDED


def test_a_job_still_running_after_the_wait_is_returned_as_it_is(store):
    job = job_record()
    store.create_job(job)
    store.update_job(job.id, to(JobStatus.RUNNING))
    assert wait_alone(store, job.id, 0.05).status is JobStatus.RUNNING
    assert not store.job_ends._waiters
