"""API keys: every /v1 route needs one when keys are set; jobs belong to the key that made them."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.auth import authenticate, key_owner
from service.core.config import Settings
from service.errors import InvalidAPIKey, MissingAPIKey
from service.main import create_app
from tests.service.conftest import embedded_settings, wait_until_finished
from tests.workers.small_models import SMALL_MODEL_ID, SmallModelSource

ALICE = {"X-API-Key": "alice-key-0123456789"}
BOB = {"X-API-Key": "bob-key-9876543210"}
REQUEST = {"model": SMALL_MODEL_ID, "image": np.full((8, 8), 0.5).tolist(), "n": 50}


@pytest.fixture
def keyed_client():
    settings = embedded_settings(api_keys=(ALICE["X-API-Key"], BOB["X-API-Key"]))
    with TestClient(create_app(settings, SmallModelSource())) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/certify"),
        ("get", "/v1/jobs/abc"),
        ("delete", "/v1/jobs/abc"),
        ("post", "/v1/batches"),
        ("get", "/v1/batches/abc"),
        ("get", "/v1/models"),
        ("get", f"/v1/models/{SMALL_MODEL_ID}"),
        ("post", "/v1/preview"),
        ("get", "/v1/defaults"),
    ],
)
def test_every_v1_route_needs_a_valid_key(keyed_client, method, path):
    missing = getattr(keyed_client, method)(path)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    wrong = getattr(keyed_client, method)(path, headers={"X-API-Key": "alice-key-0123456788"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"


def test_health_and_metrics_stay_open(keyed_client):
    assert keyed_client.get("/healthz").status_code == 200
    assert keyed_client.get("/readyz").status_code == 200
    assert keyed_client.get("/metrics").status_code == 200


def test_the_page_stays_open_to_ask_for_a_key(keyed_client):
    for path in ("/", "/web/app.js", "/web/style.css"):
        assert keyed_client.get(path).status_code == 200, path


def test_a_job_is_readable_and_cancellable_only_with_the_key_that_created_it(keyed_client):
    job = keyed_client.post("/v1/certify", json=REQUEST, headers=ALICE).json()
    assert keyed_client.get(f"/v1/jobs/{job['id']}", headers=BOB).status_code == 404
    assert keyed_client.delete(f"/v1/jobs/{job['id']}", headers=BOB).status_code == 404
    finished = wait_until_finished(keyed_client, job["id"], headers=ALICE)
    assert finished["status"] == "succeeded"

    images = [{"image": REQUEST["image"]}]
    batch = keyed_client.post(
        "/v1/batches", json={"model": SMALL_MODEL_ID, "n": 50, "images": images}, headers=BOB
    )
    assert batch.status_code == 202
    path = f"/v1/batches/{batch.json()['id']}"
    assert keyed_client.get(path, headers=ALICE).status_code == 404
    assert keyed_client.get(path, headers=BOB).status_code == 200


def test_the_store_keeps_a_hash_of_the_key_never_the_key(keyed_client):
    job = keyed_client.post("/v1/certify", json=REQUEST, headers=ALICE).json()
    record = keyed_client.app.state.runtime.store.get_job(job["id"])
    assert record.owner == key_owner(ALICE["X-API-Key"])
    assert ALICE["X-API-Key"] not in record.model_dump_json()


def test_authenticate_and_keys_from_the_environment(monkeypatch):
    assert authenticate(None, ()) is None
    with pytest.raises(MissingAPIKey):
        authenticate("", ("k1",))
    with pytest.raises(InvalidAPIKey):
        authenticate("k", ("k1",))
    assert authenticate("k1", ("k0", "k1")) == key_owner("k1")
    monkeypatch.setenv("HYCAS_API_KEYS", " k0, k1 ,,")
    assert Settings().api_keys == ("k0", "k1")
