"""Faults against a private Redis and real worker processes: every accepted job ends, once.

Each test runs its own ``redis-server`` (append-only file on) that it kills or restarts, and
real ``hycas worker`` processes that it SIGKILLs. Heartbeat timeout (2 s) and reaper period
(1 s) are short so that recovery takes seconds; the visibility timeout is long (120 s), so
every recovery seen here is the reaper's or a redelivery's, never the broker's timeout.
"""

from __future__ import annotations

import resource
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import certify
from service.main import create_app
from tests.workers.conftest import distributed_settings
from tests.workers.small_models import (
    SMALL_MODEL_ID,
    SMALL_MODEL_SIGMA,
    SmallModelSource,
    build_small_model,
)

pytestmark = pytest.mark.redis

HEARTBEAT_TIMEOUT = 2.0
REAPER_INTERVAL = 1.0
RECOVERY_BOUND = HEARTBEAT_TIMEOUT + REAPER_INTERVAL
"""The promise: a lost job is requeued within heartbeat timeout + reaper period."""
SLACK = 4.0
"""Margin for a loaded test machine (polling, process scheduling) on top of the promise."""


def fault_settings(server, **overrides: object):
    values: dict[str, object] = {
        "redis_url": server.url,
        "heartbeat_timeout_seconds": HEARTBEAT_TIMEOUT,
        "reaper_interval_seconds": REAPER_INTERVAL,
        "task_time_limit_seconds": 60,
        "broker_visibility_timeout_seconds": 120,
    }
    values.update(overrides)
    return distributed_settings("hycas-fault:", **values)


def gateway(settings) -> TestClient:
    return TestClient(create_app(settings, SmallModelSource()))


def long_request(n: int = 10_000, seed: int = 5) -> dict:
    return {
        "model": SMALL_MODEL_ID,
        "image": np.full((8, 8), 0.4).tolist(),
        "methods": ["smoothing"],
        "n": n,
        "batch_size": 500,
        "seed": seed,
    }


def expected_counts(job: dict, n: int = 10_000, seed: int = 5) -> list[int]:
    """The certificate of an undisturbed run with the job's seed (computed here, in-process)."""
    undisturbed = certify.smoothing_certify(
        build_small_model(),
        torch.full((1, 8, 8), 0.4),
        sigma=SMALL_MODEL_SIGMA,
        n0=job["parameters"]["n0"],
        n=n,
        batch_size=500,
        seed=seed,
    )
    return list(undisturbed.counts)


def job_state(client: TestClient, job_id: str) -> dict | None:
    """The job, or ``None`` while the store is down (the gateway answers 503)."""
    response = client.get(f"/v1/jobs/{job_id}")
    if response.status_code == 503:
        return None
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_progress(client: TestClient, job_id: str, worker) -> None:
    deadline = time.monotonic() + 60
    while (job_state(client, job_id) or {}).get("progress", {}).get("samples_done", 0) == 0:
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.02)


def wait_for_results(store, job_ids: list[str], count: int, worker) -> None:
    deadline = time.monotonic() + 120
    while sum(store.result_writes(job_id) for job_id in job_ids) < count:
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.05)


class HeartbeatWatch:
    """Polls a job to its end; checks it is never ``running`` without a live heartbeat for
    longer than the recovery bound."""

    def __init__(self, client: TestClient, store) -> None:
        self.client = client
        self.store = store
        self.longest_unheld = 0.0

    def until_finished(self, job_id: str, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        unheld_since: float | None = None
        while True:
            try:
                job = job_state(self.client, job_id)
                holder = self.store.heartbeat_holders([job_id])[0] if job else None
            except Exception:  # the store is down: nothing to observe
                job = holder = None
            now = time.monotonic()
            if job is not None and job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            if job is not None and job["status"] == "running" and holder is None:
                unheld_since = unheld_since or now
                self.longest_unheld = max(self.longest_unheld, now - unheld_since)
            elif job is not None:
                unheld_since = None
            assert now < deadline, f"job {job_id} not finished: {job}"
            time.sleep(0.05)


@pytest.mark.parametrize(
    ("graceful", "pool"),
    [
        pytest.param(False, "solo", id="kill-9-solo", marks=pytest.mark.slow),
        pytest.param(True, "prefork", id="graceful", marks=pytest.mark.slow),
        pytest.param(False, "threads", id="kill-9-threads", marks=pytest.mark.slow),
        pytest.param(True, "threads", id="graceful-threads", marks=pytest.mark.slow),
    ],
)
def test_a_job_survives_a_redis_restart_with_the_undisturbed_certificate(
    private_redis, start_worker, graceful, pool
):
    """Killed: the solo worker's run goes on and writes its end once Redis is back. Graceful
    (prefork, the pool of several processes): Celery terminates the task on the connection loss
    and never redelivers it; the heartbeat stops and the reaper requeues the job. Threads (the
    default for one process): the run goes on in its thread while the consumer reconnects. In
    every case the worker itself lives on and takes the next job."""
    settings = fault_settings(private_redis)
    worker = start_worker(settings, pool=pool)
    worker.wait_ready()
    with gateway(settings) as client:
        store = client.app.state.runtime.store
        job_id = client.post("/v1/certify", json=long_request()).json()["id"]
        wait_for_progress(client, job_id, worker)
        private_redis.restart(graceful=graceful)
        watch = HeartbeatWatch(client, store)
        job = watch.until_finished(job_id)
        assert job["status"] == "succeeded", (job["error"], worker.log())
        assert job["result"]["certificates"]["smoothing"]["details"]["counts"] == (
            expected_counts(job)
        )
        assert store.result_writes(job_id) == 1
        assert watch.longest_unheld <= RECOVERY_BOUND + SLACK
        # The worker lives through the restart and takes the next job.
        assert worker.process.poll() is None, worker.log()
        assert "Unrecoverable error" not in worker.log_path.read_text(errors="replace")
        after = client.post("/v1/certify", json=long_request(n=500, seed=6)).json()["id"]
        assert watch.until_finished(after)["status"] == "succeeded", worker.log()
    if graceful and pool == "prefork":  # Celery terminated the run; the reaper reran it
        assert "Terminating it instead" in worker.log_path.read_text(errors="replace")
        assert job["attempts"] == 2


def test_readiness_after_a_redis_restart_is_a_not_ready_answer_not_an_error(private_redis):
    """The first broker ping after Redis came back meets the stale connection: that is "not
    ready" (the readiness body), never an exception that reaches the client as another body."""
    import redis

    from workers.dispatch import CeleryDispatcher, NotReadyError

    settings = fault_settings(private_redis)
    dispatcher = CeleryDispatcher(settings, redis.Redis.from_url(private_redis.url))
    try:
        with pytest.raises(NotReadyError, match="no Celery worker"):
            dispatcher.check_ready()
        private_redis.restart(graceful=False)
        for _ in range(3):
            with pytest.raises(NotReadyError):
                dispatcher.check_ready()
    finally:
        dispatcher.close()


def test_a_solo_worker_busy_with_a_job_keeps_the_gateway_ready(private_redis, start_worker):
    """A solo worker cannot answer a ping while it runs a job; the job's live heartbeat shows
    it is there. With no worker at all, the gateway is not ready."""
    settings = fault_settings(private_redis)
    worker = start_worker(settings, pool="solo")
    worker.wait_ready()
    with gateway(settings) as client:
        job_id = client.post("/v1/certify", json=long_request(n=150_000)).json()["id"]
        wait_for_progress(client, job_id, worker)
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 202
        worker.stop()
        watch = HeartbeatWatch(client, client.app.state.runtime.store)
        assert watch.until_finished(job_id)["status"] == "cancelled"
        alone = client.get("/readyz")
        assert alone.status_code == 503 and "no Celery worker" in alone.json()["detail"]


@pytest.mark.slow
def test_a_killed_worker_s_job_moves_to_the_idle_worker_within_the_recovery_bound(
    private_redis, start_worker
):
    settings = fault_settings(private_redis)
    workers = [start_worker(settings, name) for name in ("first", "second")]
    for worker in workers:
        worker.wait_ready()
    with gateway(settings) as client:
        store = client.app.state.runtime.store
        job_id = client.post("/v1/certify", json=long_request()).json()["id"]
        wait_for_progress(client, job_id, workers[0])
        holder = store.heartbeat_holders([job_id])[0]
        victim = next(w for w in workers if holder.startswith(w.hostname))
        victim.kill()
        killed_at = time.monotonic()
        while (job_state(client, job_id) or {}).get("attempts") != 2:
            assert time.monotonic() - killed_at < 60, victim.log()
            time.sleep(0.05)
        restarted_after = time.monotonic() - killed_at
        job = HeartbeatWatch(client, store).until_finished(job_id)
    print(f"job restarted on the idle worker {restarted_after:.2f} s after the SIGKILL")
    assert restarted_after <= RECOVERY_BOUND + SLACK
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    assert job["result"]["certificates"]["smoothing"]["details"]["counts"] == (expected_counts(job))
    assert store.result_writes(job_id) == 1


def test_a_cancel_of_a_job_whose_worker_is_gone_ends_it_within_seconds(private_redis, start_worker):
    settings = fault_settings(private_redis)
    worker = start_worker(settings)
    worker.wait_ready()
    with gateway(settings) as client:
        job_id = client.post("/v1/certify", json=long_request()).json()["id"]
        wait_for_progress(client, job_id, worker)
        worker.kill()
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 202
        asked_at = time.monotonic()
        job = HeartbeatWatch(client, client.app.state.runtime.store).until_finished(job_id)
        assert job["status"] == "cancelled"
        assert time.monotonic() - asked_at <= RECOVERY_BOUND + SLACK


@pytest.mark.slow
def test_50_jobs_through_a_worker_kill_and_a_redis_restart_end_once_each(
    private_redis, start_worker
):
    settings = fault_settings(private_redis)
    first = start_worker(settings, "first")
    first.wait_ready()
    with gateway(settings) as client:
        store = client.app.state.runtime.store
        images = [{"image": np.full((8, 8), i / 50).tolist()} for i in range(25)]
        batches = [
            client.post(
                "/v1/batches",
                json={"model": SMALL_MODEL_ID, "images": images, "n": 2_000, "batch_size": 500},
            )
            for _ in range(2)
        ]
        assert [b.status_code for b in batches] == [202, 202]
        job_ids = [i["job_id"] for b in batches for i in b.json()["items"]]
        assert len(set(job_ids)) == 50
        wait_for_results(store, job_ids, 10, first)
        first.kill()
        second = start_worker(settings, "second")
        wait_for_results(store, job_ids, 25, second)
        private_redis.restart(graceful=False)
        watch = HeartbeatWatch(client, store)
        jobs = [watch.until_finished(job_id, timeout=180) for job_id in job_ids]
        writes = [store.result_writes(job_id) for job_id in job_ids]
    assert [job["status"] for job in jobs] == ["succeeded"] * 50, second.log()
    assert writes == [1] * 50  # 0 lost, 0 finished twice
    assert store.backlog().jobs == 0


@pytest.mark.slow
def test_a_flood_past_the_backlog_is_refused_with_429_and_the_accepted_jobs_finish(
    private_redis, start_worker
):
    settings = fault_settings(private_redis, max_queued_jobs=10)
    request = {**long_request(n=500), "image": np.full((8, 8), 0.7).tolist()}
    with gateway(settings) as client:
        warm_up = client.post("/v1/certify", json=request)  # before measuring memory
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        answers = [client.post("/v1/certify", json=request) for _ in range(300)]
        rss_growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        accepted = [a.json()["id"] for a in answers if a.status_code == 202]
        refused = [a for a in answers if a.status_code == 429]
        assert len(accepted) == 9 and len(refused) == 291
        assert all(int(a.headers["Retry-After"]) >= 1 for a in refused)
        assert {a.json()["error"]["code"] for a in refused} == {"backlog_full"}
        assert rss_growth_kib < 64 * 1024, "refused requests left memory behind"
        worker = start_worker(settings)
        worker.wait_ready()
        store = client.app.state.runtime.store
        watch = HeartbeatWatch(client, store)
        accepted.append(warm_up.json()["id"])
        assert {watch.until_finished(job_id)["status"] for job_id in accepted} == {"succeeded"}
        assert store.backlog().jobs == 0
