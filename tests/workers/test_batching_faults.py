"""A worker process running several jobs at once, their samples merged in one batcher, is
SIGKILLed: every one of its jobs is rerun elsewhere and ends once, with its seed's certificate.

The worker is a real one-process ``hycas worker`` (Celery's threads pool, four jobs per process)
against a private Redis; recovery is the reaper's (heartbeat timeout 2 s), as in
``tests/workers/test_faults.py``.
"""

from __future__ import annotations

import time

import pytest

from tests.workers.test_faults import (
    RECOVERY_BOUND,
    SLACK,
    HeartbeatWatch,
    expected_counts,
    fault_settings,
    gateway,
    job_state,
    long_request,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

JOBS = 4
N = 20_000


@pytest.mark.slow
def test_a_worker_killed_with_merged_jobs_in_flight_loses_none_of_them(private_redis, start_worker):
    settings = fault_settings(private_redis, worker_jobs_per_process=JOBS)
    first = start_worker(settings, "first", pool="threads")
    first.wait_ready()
    with gateway(settings) as client:
        store = client.app.state.runtime.store
        job_ids = [
            client.post("/v1/certify", json=long_request(n=N, seed=10 + i)).json()["id"]
            for i in range(JOBS)
        ]
        deadline = time.monotonic() + 60
        while True:  # all four running at once in the one worker process, all sampling
            jobs = [job_state(client, job_id) or {} for job_id in job_ids]
            if all(job.get("progress", {}).get("samples_done", 0) > 0 for job in jobs):
                break
            assert time.monotonic() < deadline, first.log()
            time.sleep(0.02)
        holders = store.heartbeat_holders(job_ids)
        assert all(holder and holder.startswith(first.hostname) for holder in holders), holders
        assert all(job["status"] == "running" for job in jobs)
        first.kill()
        killed_at = time.monotonic()
        second = start_worker(settings, "second", pool="threads")
        watch = HeartbeatWatch(client, store)
        finished = [watch.until_finished(job_id, timeout=180) for job_id in job_ids]
        writes = [store.result_writes(job_id) for job_id in job_ids]
    print(f"{JOBS} merged jobs finished {time.monotonic() - killed_at:.1f} s after the SIGKILL")
    assert [job["status"] for job in finished] == ["succeeded"] * JOBS, second.log()
    assert [job["attempts"] for job in finished] == [2] * JOBS
    assert writes == [1] * JOBS  # none lost, none finished twice
    assert watch.longest_unheld <= RECOVERY_BOUND + SLACK
    for i, job in enumerate(finished):
        counts = job["result"]["certificates"]["smoothing"]["details"]["counts"]
        undisturbed = expected_counts(job, n=N, seed=10 + i)
        # Rerun merged with the others: equal up to rare argmax flips of batch-size rounding.
        assert sum(abs(a - b) for a, b in zip(counts, undisturbed, strict=True)) <= N // 1000
