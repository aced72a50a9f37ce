"""Acceptance of the registry in distributed mode: a package trained by ``hycas train``'s
library call after a real ``hycas worker`` started, pushed over HTTP with an admin key to a
gateway on real Redis, is certified by that worker without a restart, and the result is the
one the trained network gives locally."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import certify
import models
from models.evaluation import EvaluationSettings
from models.training import TrainingRequest, TrainingSettings, train_and_package
from service.main import create_app
from tests.models.packages import package_files
from tests.service.conftest import wait_until_finished
from tests.workers.conftest import distributed_settings

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_a_package_pushed_after_the_worker_started_is_certified_by_it(
    key_prefix, start_worker, tmp_path
):
    repository = tmp_path / "repository"
    repository.mkdir()
    settings = distributed_settings(
        key_prefix,
        model_repository=str(repository),
        admin_api_keys=("admin-key",),
        model_refresh_seconds=30,
    )
    worker = start_worker(
        settings,
        module="service.cli",
        environment={"HYCAS_MODEL_REPOSITORY": str(repository), "HYCAS_DEVICE": "cpu"},
    )
    worker.wait_ready()

    trained = train_and_package(
        TrainingRequest(
            model_id="fresh-digits",
            config={"width": 8, "stage_depths": [1]},
            training=TrainingSettings(epochs=1, batch_size=256),
            evaluation=EvaluationSettings(n0=10, n=20, batch_size=20, ensemble=1),
            eval_limit=2,
            threads=1,
        ),
        repository=tmp_path / "trained",
        device="cpu",
        progress=False,
    )
    image = np.random.default_rng(4).random((8, 8))
    request = {"model": "fresh-digits", "image": image.tolist(), "n": 300, "seed": 9}
    request["methods"] = ["smoothing"]
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/certify", json=request).status_code == 404  # not yet pushed
        files = package_files(trained.package)
        parts = [
            ("files", (name, data, "application/octet-stream")) for name, data in files.items()
        ]
        pushed = client.post("/v1/models", files=parts, headers={"X-API-Key": "admin-key"})
        assert pushed.status_code == 201, pushed.text
        started = time.monotonic()
        job_id = client.post("/v1/certify", json=request).json()["id"]
        job = wait_until_finished(client, job_id, timeout=60)
    assert job["status"] == "succeeded", (job["error"], worker.log())
    assert job["result"]["provenance"]["host"] == worker.hostname
    assert time.monotonic() - started < 60

    model, card = models.load("fresh-digits", repository=repository)
    assert job["result"]["provenance"]["model"]["sha256"] == card.sha256
    expected = certify.smoothing_certify(
        model,
        torch.from_numpy(image.astype(np.float32)[np.newaxis]),
        sigma=card.sigma,
        n0=job["parameters"]["n0"],
        n=300,
        batch_size=job["parameters"]["batch_size"],
        seed=9,
    )
    smoothing = job["result"]["certificates"]["smoothing"]
    assert smoothing["details"]["counts"] == list(expected.counts)
    assert smoothing["radius"] == expected.radius
