"""A plain CNN package (no Lipschitz bound, no Ω) through the whole service: loaded by
``models.load`` and the worker cache, listed, ready, certified by smoothing over HTTP, and a
margin request on it refused with a clear 422."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import models
from service.main import create_app
from tests.models.packages import save_package
from tests.service.conftest import embedded_settings
from workers.model_cache import ModelCache, RepositorySource

MODEL = "digits-cnn"
SHAPE = (1, 8, 8)


def save_cnn_package(repository: Path, model_id: str = MODEL) -> None:
    """An untrained plain CNN package, saved by ``models.save_model`` into ``repository``."""
    save_package(repository, model_id, architecture="cnn")


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    save_cnn_package(tmp_path)
    return tmp_path


def test_a_cnn_package_loads_through_models_and_the_worker_cache(repository):
    model, card = models.load(MODEL, repository=repository)
    assert card.architecture == "cnn" and card.lipschitz_bound is None
    assert model.stochastic is False and model.lipschitz_bound() is None
    loaded = ModelCache(RepositorySource(repository), device="cpu").get(MODEL)
    assert loaded.lipschitz_bound is None
    assert loaded.input_shape == SHAPE and loaded.class_names == ("zero", "one", "two")


def test_a_cnn_package_is_listed_ready_and_certified_by_smoothing_over_http(repository):
    with TestClient(create_app(embedded_settings(model_repository=repository))) as client:
        listed = client.get("/v1/models")
        ready = client.get("/readyz")
        answer = client.post(
            "/v1/certify?wait=30",
            json={"model": MODEL, "image": [[0.5] * 8] * 8, "methods": ["smoothing"], "n": 100},
        )
    assert listed.status_code == 200, listed.text
    assert [m["id"] for m in listed.json()["models"]] == [MODEL]
    assert listed.json()["models"][0]["lipschitz_bound"] is None
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["status"] == "succeeded", job
    assert job["result"]["provenance"]["model"]["lipschitz_bound"] is None
    assert list(job["result"]["certificates"]) == ["smoothing"]


def test_a_margin_request_on_a_cnn_package_is_refused_with_422(repository):
    with TestClient(create_app(embedded_settings(model_repository=repository))) as client:
        answers = [
            client.post(
                "/v1/certify",
                json={"model": MODEL, "image": [[0.5] * 8] * 8, "methods": methods},
            )
            for methods in (["margin"], ["smoothing", "margin"])
        ]
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert "has no certified Lipschitz bound" in answer.json()["error"]["message"]


def test_hycas_describe_a_cnn_package_says_it_has_no_bound(repository, capsys):
    from service.cli import main

    assert main(["describe", "--model", MODEL, "--repository", str(repository)]) == 0
    assert "bound (every draw of the randomness): none (certified by smoothing only" in (
        capsys.readouterr().out
    )


def test_a_request_naming_no_methods_gets_the_defaults_a_cnn_package_can_run(repository):
    with TestClient(create_app(embedded_settings(model_repository=repository))) as client:
        answer = client.post(
            "/v1/certify?wait=30", json={"model": MODEL, "image": [[0.5] * 8] * 8, "n": 100}
        )
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["parameters"]["methods"] == ["smoothing"]
    assert list(job["result"]["certificates"]) == ["smoothing"]
