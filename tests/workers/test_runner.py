"""The job runner: claims, certifies, records progress, honours cancellation and time limits."""

from __future__ import annotations

import subprocess
import threading
import time

import torch

import certify
from tests.workers.records import image, job_record, parameters
from tests.workers.small_models import SMALL_MODEL_SIGMA, SmallModelSource, build_small_model
from workers import metrics
from workers.certification import CertificationMethod
from workers.heartbeat import Holder
from workers.jobs import JobStatus
from workers.model_cache import ModelCache
from workers.runner import JobRunner
from workers.store import InMemoryJobStore, StoreLifetimes

LIFETIMES = StoreLifetimes(image_ttl=60, pending_ttl=120, result_ttl=30)


def make_runner(**options: object) -> JobRunner:
    values: dict[str, object] = {"time_limit_seconds": 60, "max_attempts": 3}
    values.update(options)
    return JobRunner(InMemoryJobStore(LIFETIMES), ModelCache(SmallModelSource(), "cpu"), **values)


def submit(runner: JobRunner, **overrides: object):
    job = job_record(**overrides)
    runner.store.save_image(job.image_key, image(0.3))
    runner.store.create_job(job)
    return job


def counter(metric, **labels: str) -> float:
    return metric.labels(**labels)._value.get()


def test_a_job_runs_to_the_library_result_and_frees_its_image():
    runner = make_runner()
    job = submit(runner, parameters=parameters(n=300, seed=4))
    succeeded_before = counter(metrics.JOBS, state="succeeded")
    assert runner.run(job.id) is JobStatus.SUCCEEDED
    stored = runner.store.get_job(job.id)
    assert stored.status is JobStatus.SUCCEEDED and stored.attempts == 1
    assert stored.progress.samples_done == stored.progress.samples_planned == 16 + 300 + 1
    expected = certify.smoothing_certify(
        build_small_model(),
        torch.full((1, 8, 8), 0.3),
        sigma=SMALL_MODEL_SIGMA,
        n0=16,
        n=300,
        batch_size=50,
        seed=4,
    )
    smoothing = stored.result.certificates[CertificationMethod.SMOOTHING]
    assert smoothing.radius == expected.radius and smoothing.details["p_lower"] == expected.p_lower
    assert runner.store.load_image(job.image_key) is None
    assert counter(metrics.JOBS, state="succeeded") == succeeded_before + 1
    assert runner.run(job.id) is JobStatus.SUCCEEDED  # a second delivery changes nothing
    assert runner.store.get_job(job.id).attempts == 1


def test_a_redelivered_running_job_runs_again_and_gives_the_same_result():
    runner = make_runner()
    job = submit(runner, status=JobStatus.RUNNING, attempts=1, started_at=time.time())
    reference = make_runner()
    fresh = submit(reference)
    reference.run(fresh.id)
    assert runner.run(job.id) is JobStatus.SUCCEEDED
    again = runner.store.get_job(job.id)
    assert again.attempts == 2
    expected = reference.store.get_job(fresh.id).result.certificates
    for method, certificate in again.result.certificates.items():
        assert certificate.details == expected[method].details


def test_a_job_lost_too_often_fails_as_worker_lost():
    runner = make_runner(max_attempts=2)
    job = submit(runner, status=JobStatus.RUNNING, attempts=2)
    assert runner.run(job.id) is JobStatus.FAILED
    assert runner.store.get_job(job.id).error.code == "worker_lost"


def test_a_cancel_request_stops_a_running_job_between_batches():
    runner = make_runner(progress_interval_seconds=0.0)
    job = submit(runner, parameters=parameters(n=200_000, batch_size=10))

    def cancel_once_running() -> None:
        while runner.store.get_job(job.id).progress.samples_done == 0:
            time.sleep(0.005)
        runner.store.update_job(job.id, lambda j: j.model_copy(update={"cancel_requested": True}))

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    assert runner.run(job.id) is JobStatus.CANCELLED
    canceller.join()
    stored = runner.store.get_job(job.id)
    assert 0 < stored.progress.samples_done < 200_000


def test_a_queued_job_cancelled_before_it_starts_never_runs():
    runner = make_runner()
    job = submit(runner, cancel_requested=True)
    assert runner.run(job.id) is JobStatus.CANCELLED
    assert runner.store.get_job(job.id).started_at is None


def test_the_time_limit_stops_a_long_job():
    runner = make_runner(time_limit_seconds=0.3)
    job = submit(runner, parameters=parameters(n=200_000, batch_size=10))
    started = time.monotonic()
    assert runner.run(job.id) is JobStatus.FAILED
    assert time.monotonic() - started < 5
    assert runner.store.get_job(job.id).error.code == "time_limit_exceeded"


def test_missing_image_and_unknown_model_fail_with_their_codes():
    runner = make_runner()
    job = job_record()
    runner.store.create_job(job)
    assert runner.run(job.id) is JobStatus.FAILED
    assert runner.store.get_job(job.id).error.code == "image_expired"
    job = submit(runner, model_id="retired-model")
    assert runner.run(job.id) is JobStatus.FAILED
    assert runner.store.get_job(job.id).error.code == "unknown_model"
    assert runner.run("no-such-job") is None


def test_library_refusals_fail_the_job_with_the_message():
    runner = make_runner()
    job = submit(runner, parameters=parameters(alpha=0.75))
    assert runner.run(job.id) is JobStatus.FAILED
    error = runner.store.get_job(job.id).error
    assert error.code == "certification_refused" and "alpha" in error.message


def test_certificate_metrics_are_recorded():
    runner = make_runner()
    job = submit(runner, parameters=parameters(n=100, n0=10))
    samples_before = counter(metrics.NOISY_SAMPLES, model="tiny-hycas")
    margins_before = counter(metrics.CERTIFICATES, model="tiny-hycas", method="margin")
    runner.run(job.id)
    assert counter(metrics.NOISY_SAMPLES, model="tiny-hycas") == samples_before + 110
    assert counter(metrics.CERTIFICATES, model="tiny-hycas", method="margin") == margins_before + 1


def test_stopping_the_runner_cancels_a_running_job():
    runner = make_runner()
    job = submit(runner, parameters=parameters(n=200_000, batch_size=10))
    stopper = threading.Timer(0.2, runner.stop)
    stopper.start()
    assert runner.run(job.id) is JobStatus.CANCELLED
    assert runner.store.get_job(job.id).progress.samples_done < 200_000


def test_closing_the_embedded_pool_drops_queued_jobs_quietly(caplog):
    from workers.dispatch import EmbeddedDispatcher

    runner = make_runner()
    dispatcher = EmbeddedDispatcher(runner, pool_size=1)
    jobs = [submit(runner, parameters=parameters(n=200_000, batch_size=10)) for _ in range(3)]
    for job in jobs:
        dispatcher.dispatch(job.id)
    while runner.store.get_job(jobs[0].id).progress.samples_done == 0:
        time.sleep(0.005)
    with caplog.at_level("ERROR"):
        dispatcher.close()
    assert runner.store.get_job(jobs[0].id).status is JobStatus.CANCELLED
    assert [runner.store.get_job(job.id).status for job in jobs[1:]] == [JobStatus.QUEUED] * 2
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


def test_a_duplicate_delivery_of_a_job_another_live_runner_holds_is_dropped():
    runner = make_runner()
    job = submit(runner, status=JobStatus.RUNNING, attempts=1, started_at=time.time())
    elsewhere = Holder.new("other-worker@elsewhere").token()
    runner.store.claim_job(job.id, lambda j, _: j, elsewhere, 30)
    assert runner.run(job.id) is JobStatus.RUNNING
    stored = runner.store.get_job(job.id)
    assert stored.attempts == 1 and stored.result is None
    assert runner.store.heartbeat_holders([job.id]) == [elsewhere]


def test_a_job_whose_holder_process_on_this_worker_is_gone_is_claimed_at_once():
    """A prefork child killed mid-job: its heartbeat still lives, but the process does not."""
    runner = make_runner(worker_name="this-worker@host")
    job = submit(runner, status=JobStatus.RUNNING, attempts=1, started_at=time.time())
    child = subprocess.Popen(["true"])
    child.wait()
    dead_child = Holder(worker="this-worker@host", pid=child.pid, run="r1").token()
    runner.store.claim_job(job.id, lambda j, _: j, dead_child, 30)
    assert runner.run(job.id) is JobStatus.SUCCEEDED
    assert runner.store.get_job(job.id).attempts == 2
    assert runner.store.result_writes(job.id) == 1


def test_a_superseded_run_stops_and_never_writes_its_end():
    """The reaper requeued the job and another runner claimed it: the first run's progress
    and end are refused, only the second one's result is written, once."""
    first = make_runner(progress_interval_seconds=0.0)
    job = submit(first, parameters=parameters(n=3_000, batch_size=50, seed=3))
    store = first.store
    second = JobRunner(
        store, ModelCache(SmallModelSource(), "cpu"), time_limit_seconds=60, max_attempts=3
    )
    outcome: list[JobStatus | None] = []
    thread = threading.Thread(target=lambda: outcome.append(first.run(job.id)))
    thread.start()
    deadline = time.monotonic() + 30
    while store.get_job(job.id).progress.samples_done == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)

    def requeue(current):
        return current.model_copy(update={"status": JobStatus.QUEUED})

    store.update_job(job.id, requeue, drop_heartbeat=True)
    assert second.run(job.id) is JobStatus.SUCCEEDED
    thread.join(timeout=30)
    assert outcome in ([JobStatus.RUNNING], [JobStatus.SUCCEEDED])  # stopped, wrote nothing
    final = store.get_job(job.id)
    assert final.attempts == 2 and final.status is JobStatus.SUCCEEDED
    assert store.result_writes(job.id) == 1


def test_a_heartbeat_lives_while_the_job_runs_and_goes_with_its_end():
    ttl = 0.3
    runner = make_runner(heartbeat_timeout_seconds=ttl, progress_interval_seconds=0.0)
    # A job far longer than the observation (whatever the machine's speed), watched for three
    # heartbeat lifetimes while it runs, then cancelled: its heartbeat must go with its end.
    job = submit(runner, parameters=parameters(n=200_000, batch_size=50, seed=3))
    seen: list[str | None] = []
    thread = threading.Thread(target=runner.run, args=(job.id,))
    thread.start()
    running_since = None
    while not runner.store.get_job(job.id).status.is_terminal:
        if runner.store.get_job(job.id).status is JobStatus.RUNNING:
            running_since = running_since or time.monotonic()
            seen.append(runner.store.heartbeat_holders([job.id])[0])
            if time.monotonic() - running_since > 3 * ttl:
                runner.store.update_job(
                    job.id, lambda j: j.model_copy(update={"cancel_requested": True})
                )
                break
        time.sleep(0.05)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert runner.store.get_job(job.id).status is JobStatus.CANCELLED, (
        "the job ended before it was watched for three heartbeat lifetimes"
    )
    assert len(seen) > 6
    assert all(holder is not None for holder in seen)
    assert runner.store.heartbeat_holders([job.id]) == [None]
