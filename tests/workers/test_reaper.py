"""The reaper against real Redis and the real Celery queue: what it requeues, ends and leaves."""

from __future__ import annotations

import time

import pytest
import redis

from tests.workers.conftest import REDIS_URL, distributed_settings
from tests.workers.records import image, job_record
from workers.dispatch import CeleryDispatcher
from workers.heartbeat import Holder
from workers.jobs import JobStatus
from workers.reaper import Reaper
from workers.store import RedisJobStore, StoreLifetimes

pytestmark = pytest.mark.redis

LIFETIMES = StoreLifetimes(image_ttl=60, pending_ttl=120, result_ttl=30)


@pytest.fixture
def parts(key_prefix):
    settings = distributed_settings(key_prefix)
    store = RedisJobStore(redis.Redis.from_url(REDIS_URL), key_prefix, LIFETIMES)
    queue = CeleryDispatcher(settings, store.client)
    reaper = Reaper(store, queue, interval_seconds=1.0, max_attempts=3, orphan_grace_seconds=5.0)
    yield store, queue, reaper
    queue.close()


def running(store: RedisJobStore, holder: str | None = None, **overrides: object):
    """A job a runner claimed (attempt 1, or as ``overrides`` say), with or without a heartbeat."""
    values: dict[str, object] = {"status": JobStatus.RUNNING, "attempts": 1}
    values.update(overrides)
    job = job_record(started_at=time.time(), **values)
    store.save_image(job.image_key, image())
    store.create_job(job)
    if holder is not None:
        store.claim_job(job.id, lambda j, _: j, holder, 30)
    return job


def live_holder() -> str:
    return Holder.new("worker@elsewhere").token()


def test_a_running_job_without_heartbeat_is_requeued_with_a_new_message(parts):
    store, queue, reaper = parts
    lost = running(store, progress=job_record().progress.model_copy(update={"samples_done": 9}))
    alive = running(store, holder=live_holder())
    report = reaper.reap()
    assert report.requeued == [lost.id]
    requeued = store.get_job(lost.id)
    assert requeued.status is JobStatus.QUEUED and requeued.attempts == 1
    assert requeued.progress.samples_done == 0 and requeued.queued_at is not None
    assert queue.job_ids_waiting([lost.id, alive.id]) == {lost.id}
    assert store.get_job(alive.id).status is JobStatus.RUNNING
    assert reaper.reap().requeued == []  # idempotent: the requeued job has its message


def test_a_job_lost_on_its_last_attempt_fails_as_worker_lost_once(parts):
    store, queue, reaper = parts
    job = running(store, attempts=3)
    assert reaper.reap().failed == [job.id]
    failed = store.get_job(job.id)
    assert failed.status is JobStatus.FAILED and failed.error.code == "worker_lost"
    assert store.load_image(job.image_key) is None
    assert store.result_writes(job.id) == 1
    assert store.backlog().jobs == 0
    assert reaper.reap().failed == []
    assert store.result_writes(job.id) == 1
    assert queue.job_ids_waiting([job.id]) == set()


def test_a_cancel_whose_worker_is_gone_or_deaf_ends_the_job_cancelled(parts):
    store, _, reaper = parts
    now = time.time()
    gone = running(store, cancel_requested=True, cancel_requested_at=now)
    deaf = running(store, live_holder(), cancel_requested=True, cancel_requested_at=now - 6)
    listening = running(store, live_holder(), cancel_requested=True, cancel_requested_at=now)
    assert sorted(reaper.reap().cancelled) == sorted([gone.id, deaf.id])
    for job in (gone, deaf):
        assert store.get_job(job.id).status is JobStatus.CANCELLED
        assert store.heartbeat_holders([job.id]) == [None]
    assert store.get_job(listening.id).status is JobStatus.RUNNING


def test_a_queued_job_whose_message_is_lost_is_sent_again_after_the_grace(parts):
    store, queue, reaper = parts
    old = time.time() - 6
    orphan = job_record(created_at=old)
    waiting = job_record(created_at=old)
    recent = job_record()
    for job in (orphan, waiting, recent):
        store.create_job(job)
    queue.dispatch(waiting.id)
    assert reaper.reap().resent == [orphan.id]
    assert queue.job_ids_waiting([orphan.id, waiting.id, recent.id]) == {orphan.id, waiting.id}
    assert reaper.reap().resent == []


def test_a_queued_job_taken_by_a_worker_that_died_before_claiming_it_is_sent_again(parts):
    """Its message sits among the unacknowledged ones until the visibility timeout: the
    reaper sends it again when it sees the job still unclaimed in a second pass."""
    store, queue, reaper = parts
    job = job_record(created_at=time.time() - 6)
    store.create_job(job)
    queue.dispatch(job.id)
    message = store.client.rpop(queue.queue_name)
    store.client.hset("unacked", f"test-{job.id}", message)
    try:
        assert queue.job_ids_delivered([job.id]) == {job.id}
        assert reaper.reap().resent == []
        assert reaper.reap().resent == [job.id]
        assert queue.job_ids_waiting([job.id]) == {job.id}
    finally:
        store.client.hdel("unacked", f"test-{job.id}")


def test_an_expired_job_leaves_the_backlog(parts):
    store, _, reaper = parts
    job = job_record()
    store.create_job(job)
    assert store.backlog().jobs == 1
    store.client.delete(f"{store.prefix}job:{job.id}")
    assert reaper.reap().forgotten == [job.id]
    assert store.backlog().jobs == 0 and store.backlog().samples == 0


def test_one_reaper_acts_per_period(parts):
    store, queue, reaper = parts
    other = Reaper(store, queue, interval_seconds=1.0, max_attempts=3, orphan_grace_seconds=5.0)
    assert reaper.reap_if_due() is not None
    assert other.reap_if_due() is None
    time.sleep(1.0)
    assert other.reap_if_due() is not None
