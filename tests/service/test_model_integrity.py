"""Packages that fail their integrity checks are unavailable (503 with the reason), listed by
``/readyz``; versions added to the repository while the server runs are used without restart."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models.repository import SHIPPED_REPOSITORY
from service.main import create_app
from tests.service.conftest import embedded_settings

MODEL = "digits-hycas"
SHIPPED = SHIPPED_REPOSITORY / MODEL / "1"


def add_version(repository: Path, version: str) -> Path:
    """A copy of the shipped package filed as ``version`` (its card says so)."""
    package = repository / MODEL / version
    shutil.copytree(SHIPPED, package)
    card_path = package / "model.json"
    card = json.loads(card_path.read_text())
    card["version"] = version
    card_path.write_text(json.dumps(card))
    return package


def flip_a_weight_byte(package: Path) -> None:
    weights = package / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))


def client_for(repository: Path, **settings: object) -> TestClient:
    return TestClient(create_app(embedded_settings(model_repository=repository, **settings)))


def certify(client: TestClient, **fields: str) -> dict:
    response = client.post(
        "/v1/certify?wait=30",
        json={"model": MODEL, "image": [[0.5] * 8] * 8, "methods": ["margin"], **fields},
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_a_tampered_package_answers_503_with_the_reason_and_readyz_lists_it(tmp_path, caplog):
    flip_a_weight_byte(add_version(tmp_path, "1"))
    caplog.set_level(logging.INFO)
    with client_for(tmp_path) as client:
        answers = [
            client.get(f"/v1/models/{MODEL}"),
            client.get(f"/v1/models/{MODEL}", params={"version": "1"}),
            client.post("/v1/certify", json={"model": MODEL, "image": [[0.5] * 8] * 8}),
        ]
        ready = client.get("/readyz")
        listed = client.get("/v1/models")
    for answer in answers:
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["code"] == "model_unavailable"
        assert "SHA-256" in error["message"] and "modified or corrupted" in error["message"]
        assert str(tmp_path) not in error["message"]
    assert ready.status_code == 503
    assert ready.json()["models"] == [
        {
            "id": MODEL,
            "version": "1",
            "status": "unavailable",
            "reason": ready.json()["models"][0]["reason"],
        }
    ]
    assert "SHA-256" in ready.json()["models"][0]["reason"]
    assert MODEL in ready.json()["detail"]
    assert listed.status_code == 200
    assert listed.json()["models"] == []
    assert [(v["id"], v["version"]) for v in listed.json()["unavailable"]] == [(MODEL, "1")]
    # One log line for the failure, however often it is asked for, and no traceback.
    failures = [r for r in caplog.records if "event=model_unavailable" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is None
    assert not [r for r in caplog.records if r.exc_info is not None]


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        ("card", "is invalid"),
        ("architecture", "unknown architecture"),
        ("config", "do not fit the network"),
    ],
)
def test_a_card_that_does_not_parse_or_a_network_that_does_not_build_is_unavailable(
    tmp_path, breakage, reason
):
    package = add_version(tmp_path, "1")
    card_path = package / "model.json"
    card = json.loads(card_path.read_text())
    if breakage == "card":
        card_path.write_text(card_path.read_text()[:-20])
    else:
        if breakage == "architecture":
            card["architecture"] = "no-such-network"
        else:
            card["config"]["width"] = 3
        card_path.write_text(json.dumps(card))
    with client_for(tmp_path) as client:
        answer = client.get(f"/v1/models/{MODEL}")
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "model_unavailable"
    assert reason in answer.json()["error"]["message"]


def test_a_corrupt_new_version_leaves_the_previous_one_serving_and_is_listed(tmp_path):
    add_version(tmp_path, "1")
    flip_a_weight_byte(add_version(tmp_path, "2"))
    with client_for(tmp_path) as client:
        default = client.get(f"/v1/models/{MODEL}")
        named = client.get(f"/v1/models/{MODEL}", params={"version": "2"})
        ready = client.get("/readyz")
        result = certify(client)
    assert default.status_code == 200 and default.json()["version"] == "1"
    assert named.status_code == 503 and "SHA-256" in named.json()["error"]["message"]
    assert ready.status_code == 200, ready.text
    statuses = {v["version"]: v["status"] for v in ready.json()["models"]}
    assert statuses == {"1": "available", "2": "unavailable"}
    assert f"{MODEL} v2" in ready.json()["detail"]
    assert result["model"]["version"] == "1"


def test_a_version_added_while_the_server_runs_is_used_by_the_next_request(tmp_path):
    add_version(tmp_path, "1")
    with client_for(tmp_path, model_refresh_seconds=3600) as client:
        assert certify(client)["model"]["version"] == "1"
        add_version(tmp_path, "2")
        # Named: the repository is listed again at once, whatever the refresh period.
        assert certify(client, version="2")["model"]["version"] == "2"
        # And the default follows the newest valid version.
        assert certify(client)["model"]["version"] == "2"


def test_the_default_version_follows_new_versions_on_the_refresh_period(tmp_path):
    add_version(tmp_path, "1")
    with client_for(tmp_path, model_refresh_seconds=0) as client:
        assert client.get(f"/v1/models/{MODEL}").json()["version"] == "1"
        add_version(tmp_path, "2")
        assert certify(client)["model"]["version"] == "2"
        assert client.get("/readyz").json()["models"][-1] == {
            "id": MODEL,
            "version": "2",
            "status": "available",
            "reason": None,
        }


def test_an_unknown_version_is_still_404(tmp_path):
    add_version(tmp_path, "1")
    with client_for(tmp_path) as client:
        answer = client.get(f"/v1/models/{MODEL}", params={"version": "7"})
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "unknown_model"
    assert "['1']" in answer.json()["error"]["message"]
