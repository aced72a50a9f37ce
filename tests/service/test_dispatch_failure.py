"""A broker that refuses at dispatch: 503 ``queue_unavailable`` and no job left ``queued``.

The job store is the test Redis (reachable); the Celery broker is a loopback port where
nothing listens, so kombu's real publish fails with its real error.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from service.main import create_app
from tests.service.conftest import png_bytes
from tests.workers.conftest import REDIS_URL, delete_keys, distributed_settings
from tests.workers.small_models import SMALL_MODEL_ID, SmallModelSource
from workers.dispatch import CeleryDispatcher
from workers.jobs import JobRecord, JobStatus

pytestmark = pytest.mark.redis


@pytest.fixture
def store_client() -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    prefix = f"hycas-test-{uuid.uuid4().hex[:12]}:"
    yield client, prefix
    delete_keys(client, f"{prefix}*")
    client.close()


def _refusing_redis_url() -> str:
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/11"


def _stored_jobs(client: redis.Redis, prefix: str) -> list[JobRecord]:
    return [
        JobRecord.model_validate_json(client.get(key))
        for key in client.scan_iter(match=f"{prefix}job:*")
    ]


def test_a_refusing_broker_is_a_503_queue_unavailable_and_leaves_no_queued_job(store_client):
    client, prefix = store_client
    settings = distributed_settings(prefix)
    broken = distributed_settings(prefix, redis_url=_refusing_redis_url())
    app = create_app(settings, SmallModelSource())
    app.state.runtime.jobs.dispatcher = CeleryDispatcher(broken, client)
    image = {"model": SMALL_MODEL_ID, "image": np.full((8, 8), 0.5).tolist(), "n": 100}
    files = [("files", (f"{i}.png", png_bytes(size=(8, 8), seed=i), "image/png")) for i in range(3)]
    with TestClient(app) as http:
        single = http.post("/v1/certify", json=image)
        batch = http.post("/v1/batches", files=files, data={"model": SMALL_MODEL_ID, "n": "100"})
    for response in (single, batch):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "queue_unavailable"
    jobs = _stored_jobs(client, prefix)
    assert len(jobs) == 4  # created, then failed: the answer names no job the caller could poll
    for job in jobs:
        assert job.status is JobStatus.FAILED
        assert job.error is not None and job.error.code == "queue_unavailable"
        assert not client.exists(f"{prefix}image:{job.image_key}")
