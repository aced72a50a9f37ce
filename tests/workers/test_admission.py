"""Admission control: the backlog of unfinished jobs is bounded in jobs and samples, per key."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from service.core.config import Settings
from service.main import create_app
from tests.service.conftest import wait_until_finished
from tests.workers.conftest import REDIS_URL
from tests.workers.records import job_record, parameters
from tests.workers.small_models import SMALL_MODEL_ID, SmallModelSource
from workers.admission import BacklogFull, BacklogLimits
from workers.jobs import JobStatus
from workers.store import InMemoryJobStore, RedisJobStore, StoreLifetimes

LIFETIMES = StoreLifetimes(image_ttl=60, pending_ttl=120, result_ttl=30)


def limits(**overrides: int) -> BacklogLimits:
    values = {
        "max_jobs": 4,
        "max_jobs_per_key": 2,
        "max_samples": 10_000,
        "max_samples_per_key": 10_000,
        "drain_samples_per_second": 1_000.0,
    }
    values.update(overrides)
    return BacklogLimits(**values)  # type: ignore[arg-type]


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "memory"])
def store(request):
    if request.param == "redis":
        key_prefix = request.getfixturevalue("key_prefix")
        return RedisJobStore(redis.Redis.from_url(REDIS_URL), key_prefix, LIFETIMES)
    return InMemoryJobStore(LIFETIMES)


def weighing(samples: int, owner: str | None = None):
    """A job planning ``samples`` noisy samples (n0 = 16, the rest n) of ``owner``."""
    return job_record(
        owner=owner, parameters=parameters(methods=("smoothing",), n0=16, n=samples - 16)
    )


def test_the_backlog_counts_unfinished_jobs_and_frees_room_as_they_end(store):
    first, second = weighing(1_000), weighing(3_000)
    store.admit_jobs([first, second], limits())
    assert store.backlog().jobs == 2 and store.backlog().samples == 4_000
    assert sorted(store.active_job_ids()) == sorted([first.id, second.id])
    store.update_job(first.id, lambda j: j.model_copy(update={"status": JobStatus.RUNNING}))
    assert store.backlog().jobs == 2  # running is still unfinished
    store.update_job(first.id, lambda j: j.model_copy(update={"status": JobStatus.SUCCEEDED}))
    store.update_job(first.id, lambda j: j.model_copy(update={"status": JobStatus.FAILED}))
    assert store.backlog().jobs == 1 and store.backlog().samples == 3_000
    assert store.result_writes(first.id) == 1  # a terminal job is never ended again


def test_a_request_past_a_job_limit_is_refused_whole_with_a_retry_estimate(store):
    store.admit_jobs([weighing(1_000) for _ in range(3)], limits())
    batch = [weighing(1_000), weighing(1_000)]
    with pytest.raises(BacklogFull) as refused:
        store.admit_jobs(batch, limits())
    assert "HYCAS_MAX_QUEUED_JOBS" in refused.value.message
    # One job too many, weighing the backlog's mean (1,000 samples), drains at 1,000/s.
    assert refused.value.retry_after == 1
    assert store.get_jobs([job.id for job in batch]) == [None, None]
    assert store.backlog().jobs == 3
    store.admit_jobs(batch[:1], limits())
    assert store.backlog().jobs == 4


def test_samples_weigh_as_much_as_jobs(store):
    store.admit_jobs([weighing(8_000)], limits())
    with pytest.raises(BacklogFull) as refused:
        store.admit_jobs([weighing(4_000)], limits())
    assert "HYCAS_MAX_QUEUED_SAMPLES" in refused.value.message
    assert refused.value.retry_after == 2  # 2,000 samples over, at 1,000/s
    store.admit_jobs([weighing(2_000)], limits())


def test_each_api_key_has_its_own_limit(store):
    store.admit_jobs([weighing(100, "alice"), weighing(100, "alice")], limits())
    with pytest.raises(BacklogFull) as refused:
        store.admit_jobs([weighing(100, "alice")], limits())
    assert "HYCAS_MAX_QUEUED_JOBS_PER_KEY" in refused.value.message
    store.admit_jobs([weighing(100, "bob")], limits())
    assert store.backlog("alice").key_jobs == 2 and store.backlog("bob").key_samples == 100
    with pytest.raises(BacklogFull, match="HYCAS_MAX_QUEUED_SAMPLES_PER_KEY"):
        store.admit_jobs([weighing(9_500, "carol")], limits(max_samples_per_key=9_000))


@pytest.mark.redis
def test_concurrent_gateways_never_overshoot_the_limit(key_prefix):
    """Eight clients (as eight gateways would) race for 20 places: exactly 20 are admitted."""
    admitted: list[int] = []
    lock = threading.Lock()

    def gateway() -> None:
        store = RedisJobStore(redis.Redis.from_url(REDIS_URL), key_prefix, LIFETIMES)
        count = 0
        for _ in range(10):
            try:
                store.admit_jobs([weighing(100)], limits(max_jobs=20))
                count += 1
            except BacklogFull:
                pass
        with lock:
            admitted.append(count)

    threads = [threading.Thread(target=gateway) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store = RedisJobStore(redis.Redis.from_url(REDIS_URL), key_prefix, LIFETIMES)
    assert sum(admitted) == 20
    assert store.backlog().jobs == 20 and len(store.active_job_ids()) == 20


def test_the_api_answers_429_with_retry_after_and_a_batch_is_all_or_nothing():
    settings = Settings(max_queued_jobs=3, default_n=100, api_keys=("k1",))
    request = {"model": SMALL_MODEL_ID, "image": np.full((8, 8), 0.5).tolist(), "n": 50_000}
    with TestClient(create_app(settings, SmallModelSource())) as client:
        headers = {"X-API-Key": "k1"}
        accepted = [client.post("/v1/certify", json=request, headers=headers) for _ in range(3)]
        assert [r.status_code for r in accepted] == [202, 202, 202]
        refused = client.post("/v1/certify", json=request, headers=headers)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "backlog_full"
        assert int(refused.headers["Retry-After"]) >= 1
        for response in accepted:
            client.delete(response.json()["url"], headers=headers)
        for response in accepted:
            wait_until_finished(client, response.json()["id"], headers=headers)
        store = client.app.state.runtime.store
        assert store.backlog().jobs == 0
        images = [{"image": np.full((8, 8), 0.5).tolist()} for _ in range(4)]
        # Larger than the limit on its own: no wait would help, so it is a 422, not a 429.
        batch = client.post(
            "/v1/batches", json={"model": SMALL_MODEL_ID, "images": images}, headers=headers
        )
        assert batch.status_code == 422, batch.text
        assert batch.json()["error"]["code"] == "exceeds_backlog_limit"
        assert "Retry-After" not in batch.headers and store.backlog().jobs == 0
        single = client.post("/v1/certify", json=request, headers=headers)
        assert single.status_code == 202
        batch = client.post(
            "/v1/batches", json={"model": SMALL_MODEL_ID, "images": images[:3]}, headers=headers
        )
        assert batch.status_code == 429, batch.text
        assert store.backlog().jobs == 1  # all or nothing: none of the three was stored
        client.delete(single.json()["url"], headers=headers)
        wait_until_finished(client, single.json()["id"], headers=headers)
        batch = client.post(
            "/v1/batches", json={"model": SMALL_MODEL_ID, "images": images[:3]}, headers=headers
        )
        assert batch.status_code == 202, batch.text
