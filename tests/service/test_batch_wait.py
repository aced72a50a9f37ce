"""``POST /v1/batches?wait=s``: 200 with every item's result when all finished in time, else
202 with the batch as it stands."""

from __future__ import annotations

import numpy as np

from tests.service.conftest import png_bytes
from tests.workers.small_models import SMALL_MODEL_ID


def test_a_batch_that_finishes_within_wait_answers_200_with_every_result(client):
    files = [("files", (f"img{i}.png", png_bytes(seed=i), "image/png")) for i in range(3)]
    response = client.post(
        "/v1/batches?wait=30",
        files=files,
        data={"model": SMALL_MODEL_ID, "n": "100", "methods": "smoothing,margin"},
    )
    assert response.status_code == 200, response.text
    batch = response.json()
    assert response.headers["location"] == f"/v1/batches/{batch['id']}"
    assert batch["status"] == "finished" and batch["counts"]["succeeded"] == 3
    for item in batch["items"]:
        assert item["job"]["status"] == "succeeded"
        assert set(item["job"]["result"]["certificates"]) == {"smoothing", "margin"}


def test_a_json_batch_waits_too(client):
    images = [{"image": np.full((8, 8), v).tolist()} for v in (0.2, 0.8)]
    response = client.post(
        "/v1/batches?wait=30",
        json={"model": SMALL_MODEL_ID, "images": images, "n": 50, "methods": ["margin"]},
    )
    assert response.status_code == 200, response.text
    assert all(item["job"]["result"] for item in response.json()["items"])


def test_a_batch_still_running_after_wait_answers_202(client):
    images = [{"image": np.full((8, 8), v).tolist()} for v in (0.3, 0.6)]
    response = client.post(
        "/v1/batches?wait=0.05",
        json={"model": SMALL_MODEL_ID, "images": images, "n": 200_000, "methods": ["smoothing"]},
    )
    assert response.status_code == 202, response.text
    batch = response.json()
    assert batch["status"] == "running"
    for item in batch["items"]:
        assert client.delete(f"/v1/jobs/{item['job_id']}").status_code == 202


def test_wait_must_not_be_negative(client):
    images = [{"image": np.full((8, 8), 0.5).tolist()}]
    response = client.post(
        "/v1/batches?wait=-1", json={"model": SMALL_MODEL_ID, "images": images, "n": 50}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
