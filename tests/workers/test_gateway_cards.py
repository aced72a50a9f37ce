"""The distributed gateway reads cards: it lists models and answers ``/readyz`` without
building a network, and still refuses a package whose weights do not match their card."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.main import create_app
from tests.service.conftest import png_bytes
from tests.service.test_cnn_package import save_cnn_package
from tests.service.test_model_integrity import flip_a_weight_byte
from tests.workers.conftest import distributed_settings


def test_the_distributed_gateway_lists_and_checks_models_from_their_cards(key_prefix, tmp_path):
    save_cnn_package(tmp_path, "digits-cnn")
    save_cnn_package(tmp_path, "tampered-cnn")
    flip_a_weight_byte(tmp_path / "tampered-cnn" / "1")
    settings = distributed_settings(key_prefix, model_repository=tmp_path)
    with TestClient(create_app(settings)) as client:
        listed = client.get("/v1/models")
        ready = client.get("/readyz")
        queued = client.post(
            "/v1/certify",
            files={"file": ("digit.png", png_bytes(size=(8, 8)), "image/png")},
            data={"model": "digits-cnn", "methods": "smoothing", "n": "100"},
        )
        refused = client.post(
            "/v1/certify",
            files={"file": ("digit.png", png_bytes(size=(8, 8)), "image/png")},
            data={"model": "digits-cnn", "methods": "margin"},
        )
        loaded = client.app.state.runtime.models.get("digits-cnn")
    assert listed.status_code == 200, listed.text
    assert [m["id"] for m in listed.json()["models"]] == ["digits-cnn"]
    assert listed.json()["models"][0]["input_shape"] == [1, 8, 8]
    unavailable = listed.json()["unavailable"]
    assert [u["id"] for u in unavailable] == ["tampered-cnn"]
    assert "SHA-256" in unavailable[0]["reason"]
    assert ready.status_code == 503 and "tampered-cnn" in ready.json()["detail"]
    statuses = {s["id"]: s["status"] for s in ready.json()["models"]}
    assert statuses == {"digits-cnn": "available", "tampered-cnn": "unavailable"}
    assert loaded.model is None  # the gateway read the card; a worker builds the network
    assert queued.status_code == 202, queued.text
    assert refused.status_code == 422 and "no certified Lipschitz bound" in refused.text
