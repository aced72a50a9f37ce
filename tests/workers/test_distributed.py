"""Distributed mode end to end: the gateway, real Redis and real Celery worker processes."""

from __future__ import annotations

import os
import signal
import time
import urllib.request

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import certify
from service.main import create_app
from tests.service.conftest import png_bytes, wait_until_finished
from tests.workers.conftest import distributed_settings
from tests.workers.small_models import (
    SMALL_MODEL_ID,
    SMALL_MODEL_SIGMA,
    SmallModelSource,
    build_small_model,
)

pytestmark = pytest.mark.redis


def gateway(settings) -> TestClient:
    return TestClient(create_app(settings, SmallModelSource()))


def test_a_batch_of_20_and_a_job_run_on_a_worker_and_expire_with_their_ttl(
    key_prefix, start_worker, redis_client
):
    ttl = 8
    settings = distributed_settings(key_prefix, result_ttl_seconds=ttl)
    worker = start_worker(settings)
    with gateway(settings) as client:
        files = [("files", (f"{i}.png", png_bytes(seed=i), "image/png")) for i in range(20)]
        batch = client.post("/v1/batches", files=files, data={"model": SMALL_MODEL_ID, "n": "100"})
        assert batch.status_code == 202, batch.text
        worker.wait_ready()
        # Results are collected as they appear: with an 8 s TTL the first ones may expire
        # before the last ones finish on a busy machine.
        inputs: dict[str, str] = {}
        deadline = time.monotonic() + 90
        while len(inputs) < 20:
            body = client.get(batch.json()["url"]).json()
            for item in body["items"]:
                job = item["job"]
                if job is not None and job["status"] != "queued" and job["status"] != "running":
                    assert job["status"] == "succeeded", job["error"]
                    inputs[item["job_id"]] = job["result"]["input"]["sha256"]
            assert time.monotonic() < deadline, body["counts"]
            time.sleep(0.1)
        assert len(set(inputs.values())) == 20

        image = np.random.default_rng(0).random((8, 8))
        response = client.post(
            "/v1/certify",
            json={"model": SMALL_MODEL_ID, "image": image.tolist(), "n": 300, "seed": 21},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert redis_client.exists(f"{key_prefix}image:{job_id}")
        job = wait_until_finished(client, job_id)
        finished = time.monotonic()
        assert job["status"] == "succeeded", job["error"]
        assert job["result"]["provenance"]["host"] == worker.hostname  # its name, no pid
        expected = certify.smoothing_certify(
            build_small_model(),
            torch.from_numpy(image.astype(np.float32)[np.newaxis]),
            sigma=SMALL_MODEL_SIGMA,
            n0=job["parameters"]["n0"],
            n=300,
            batch_size=100,
            seed=21,
        )
        smoothing = job["result"]["certificates"]["smoothing"]
        assert smoothing["radius"] == expected.radius
        assert smoothing["details"]["counts"] == list(expected.counts)

        # The image is deleted once used; the result stays until its TTL, then is gone.
        assert not redis_client.exists(f"{key_prefix}image:{job_id}")
        assert 0 < redis_client.ttl(f"{key_prefix}job:{job_id}") <= ttl
        while client.get(f"/v1/jobs/{job_id}").status_code == 200:
            assert time.monotonic() - finished < ttl + 3
            time.sleep(0.25)
        assert time.monotonic() - finished >= ttl - 1
        assert not redis_client.exists(f"{key_prefix}job:{job_id}")


def start_a_long_job(client: TestClient, worker) -> str:
    """A smoothing job of 4,000 samples in batches of 1,000; its id once it has progressed."""
    request = {
        "model": SMALL_MODEL_ID,
        "image": np.full((8, 8), 0.4).tolist(),
        "methods": ["smoothing"],
        "n": 4_000,
        "batch_size": 1_000,
        "seed": 5,
    }
    job_id = client.post("/v1/certify", json=request).json()["id"]
    deadline = time.monotonic() + 30
    while client.get(f"/v1/jobs/{job_id}").json()["progress"]["samples_done"] == 0:
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.02)
    return job_id


@pytest.mark.slow
def test_a_worker_killed_mid_job_loses_nothing(key_prefix, start_worker):
    """Rerun by the reaper once the heartbeat expires (3 s), before the visibility timeout."""
    settings = distributed_settings(
        key_prefix,
        task_time_limit_seconds=8,
        broker_visibility_timeout_seconds=14,
        heartbeat_timeout_seconds=3,
        reaper_interval_seconds=1,
    )
    victim = start_worker(settings, "victim")
    victim.wait_ready()
    with gateway(settings) as client:
        job_id = start_a_long_job(client, victim)
        victim.kill()
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
        rescuer = start_worker(settings, "rescuer")
        rescuer.wait_ready()
        job = wait_until_finished(client, job_id, timeout=60)
    assert job["status"] == "succeeded", (job["error"], rescuer.log())
    assert job["attempts"] == 2
    assert job["result"]["provenance"]["host"] == rescuer.hostname
    expected = certify.smoothing_certify(
        build_small_model(),
        torch.full((1, 8, 8), 0.4),
        sigma=SMALL_MODEL_SIGMA,
        n0=job["parameters"]["n0"],
        n=4_000,
        batch_size=1_000,
        seed=5,
    )
    assert job["result"]["certificates"]["smoothing"]["details"]["counts"] == list(expected.counts)


def test_a_prefork_pool_process_killed_mid_job_is_replaced_and_the_job_rerun(
    key_prefix, start_worker
):
    """SIGKILL of the pool process (not the worker): the worker rejects the job back to the
    queue at once (late acks, reject on worker lost), long before the visibility timeout."""
    settings = distributed_settings(
        key_prefix, task_time_limit_seconds=60, broker_visibility_timeout_seconds=120
    )
    worker = start_worker(settings, "prefork", pool="prefork")
    worker.wait_ready()
    with gateway(settings) as client:
        job_id = start_a_long_job(client, worker)
        (victim,) = worker.children()
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        job = wait_until_finished(client, job_id, timeout=60)
    assert job["status"] == "succeeded", (job["error"], worker.log())
    assert time.monotonic() - killed_at < 60, "rerun only after the visibility timeout"
    assert job["attempts"] == 2
    assert job["result"]["provenance"]["host"] == worker.hostname  # every pool process's name
    assert victim not in worker.children()
    assert worker.process.poll() is None
    assert "WorkerLostError" in worker.log()


def test_worker_metrics_reach_the_gateway_and_the_worker_port(
    key_prefix, start_worker, tmp_path, monkeypatch
):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    settings = distributed_settings(key_prefix)
    worker = start_worker(settings, metrics_dir=metrics_dir, metrics_port=19808)
    worker.wait_ready()
    with gateway(settings) as client:
        response = client.post(
            "/v1/certify?wait=30",
            json={"model": SMALL_MODEL_ID, "image": np.full((8, 8), 0.6).tolist(), "n": 100},
        )
        assert response.json()["status"] == "succeeded"
        # The gateway on the same host reads the shared multiprocess folder.
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
        exposition = client.get("/metrics").text
    with urllib.request.urlopen("http://127.0.0.1:19808/metrics", timeout=5) as answer:
        worker_exposition = answer.read().decode()
    for text in (exposition, worker_exposition):
        families = {f.name: f for f in text_string_to_metric_families(text)}
        samples = {s.name: s.value for f in families.values() for s in f.samples if not s.labels}
        noisy = [s for s in families["hycas_noisy_samples"].samples if s.name.endswith("_total")]
        assert sum(s.value for s in noisy) == settings.default_n0 + 100
        assert samples["hycas_job_duration_seconds_count"] == 1
        assert families["hycas_models_loaded"].type == "gauge"
    assert "hycas_queue_length 0.0" in exposition


def test_readiness_needs_a_worker(key_prefix, start_worker):
    settings = distributed_settings(key_prefix)
    with gateway(settings) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "no Celery worker" in response.json()["detail"]
        start_worker(settings).wait_ready()
        response = client.get("/readyz")
        assert response.status_code == 200 and response.json()["mode"] == "distributed"
