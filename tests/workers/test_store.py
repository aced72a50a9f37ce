"""The Redis store (real Redis) and the in-memory store keep the same contract."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import redis

from tests.workers.conftest import REDIS_URL
from tests.workers.records import image, job_record
from workers.jobs import BatchItem, BatchRecord, JobStatus
from workers.store import InMemoryJobStore, RedisJobStore, StoreLifetimes

LIFETIMES = StoreLifetimes(image_ttl=60, pending_ttl=120, result_ttl=30)


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "memory"])
def store(request):
    if request.param == "redis":
        key_prefix = request.getfixturevalue("key_prefix")
        return RedisJobStore(redis.Redis.from_url(REDIS_URL), key_prefix, LIFETIMES)
    return InMemoryJobStore(LIFETIMES)


def test_images_round_trip_exactly_and_can_be_deleted(store):
    values = np.random.default_rng(0).random((3, 5, 7)).astype(np.float32)
    store.save_image("a", values)
    np.testing.assert_array_equal(store.load_image("a"), values)
    store.delete_image("a")
    assert store.load_image("a") is None


def test_jobs_are_created_once_read_and_updated(store):
    job = job_record()
    store.create_job(job)
    store.create_job(job.model_copy(update={"attempts": 5}))
    assert store.get_job(job.id) == job
    updated = store.update_job(job.id, lambda j: j.model_copy(update={"attempts": 1}))
    assert updated.attempts == 1 and store.get_job(job.id).attempts == 1
    assert store.update_job(job.id, lambda j: None) == updated
    assert store.update_job("missing", lambda j: j) is None
    assert store.get_jobs([job.id, "missing"]) == [updated, None]


def test_concurrent_updates_are_never_lost(store):
    job = job_record()
    store.create_job(job)

    def add_attempts() -> None:
        for _ in range(25):
            store.update_job(job.id, lambda j: j.model_copy(update={"attempts": j.attempts + 1}))

    threads = [threading.Thread(target=add_attempts) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get_job(job.id).attempts == 100


def test_batches_round_trip(store):
    batch = BatchRecord(
        id="b1",
        model_id="tiny-hycas",
        model_version="1",
        owner="o",
        items=(BatchItem(index=0, job_id="j0", filename="x.png"),),
    )
    store.create_batch(batch)
    assert store.get_batch("b1") == batch
    assert store.get_batch("b2") is None


@pytest.mark.redis
def test_redis_ttls_follow_the_job_state(key_prefix, redis_client):
    store = RedisJobStore(redis_client, key_prefix, LIFETIMES)
    job = job_record()
    store.save_image(job.image_key, image())
    store.create_job(job)
    assert 60 - 2 <= redis_client.ttl(f"{key_prefix}image:{job.image_key}") <= 60
    assert 120 - 2 <= redis_client.ttl(f"{key_prefix}job:{job.id}") <= 120
    store.update_job(job.id, lambda j: j.model_copy(update={"status": JobStatus.SUCCEEDED}))
    assert 30 - 2 <= redis_client.ttl(f"{key_prefix}job:{job.id}") <= 30


@pytest.mark.redis
def test_redis_records_expire(key_prefix, redis_client):
    store = RedisJobStore(redis_client, key_prefix, StoreLifetimes(1, 1, 1))
    job = job_record()
    store.create_job(job)
    store.save_image(job.image_key, image())
    time.sleep(1.2)
    assert store.get_job(job.id) is None and store.load_image(job.image_key) is None


def test_memory_records_expire_with_the_same_lifetimes():
    clock = ManualClock()
    store = InMemoryJobStore(LIFETIMES, clock=clock)
    job = job_record()
    store.create_job(job)
    store.save_image(job.image_key, image())
    clock.now = 61
    assert store.load_image(job.image_key) is None and store.get_job(job.id) is not None
    store.update_job(job.id, lambda j: j.model_copy(update={"status": JobStatus.FAILED}))
    clock.now = 61 + 29
    assert store.get_job(job.id) is not None
    assert store.result_writes(job.id) == 1
    clock.now = 61 + 31
    assert store.get_job(job.id) is None
    assert store.result_writes(job.id) == 0  # the count of result writes expires with it
    store.save_image("later", image())
    assert len(store._entries) == 1  # the sweep dropped everything that expired
