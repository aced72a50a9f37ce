"""Registering and retiring model versions over HTTP (embedded mode, a real repository folder):
admin keys only, every check before anything is stored, immutable versions, retirement that
lets queued jobs finish, and an ONNX classifier certified by smoothing with margin refused."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from models.package_store import PackageStore
from models.registration import check_package
from service.main import create_app
from tests.models.packages import package_files, save_package, with_card
from tests.service.conftest import embedded_settings, wait_until_finished
from tests.workers.small_models import SmallModelSource

ADMIN = {"X-API-Key": "admin-key"}
USER = {"X-API-Key": "user-key"}
IMAGE = np.full((8, 8), 0.5).tolist()


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """Versions 1 and 2 of ``tiny`` (HyCAS, 8×8, 3 classes), as the files a push sends."""
    trained = tmp_path_factory.mktemp("trained")
    return {v: package_files(save_package(trained, version=v)) for v in ("1", "2")}


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return tmp_path / "repository"


@pytest.fixture
def client(repository: Path):
    settings = embedded_settings(
        model_repository=repository,
        api_keys=("user-key",),
        admin_api_keys=("admin-key",),
        model_refresh_seconds=60,
        worker_jobs_per_process=1,  # one job at a time: a second one waits in the queue
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def push(client: TestClient, files: dict[str, bytes], headers=ADMIN):
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files.items()]
    return client.post("/v1/models", files=parts, headers=headers)


def test_an_admin_pushes_a_package_that_then_certifies_and_lists_its_versions(
    client, packages, repository
):
    response = push(client, packages["1"])
    assert response.status_code == 201, response.text
    body = response.json()
    card = check_package(packages["1"]).card
    assert (body["id"], body["version"], body["status"]) == ("tiny", "1", "available")
    assert body["sha256"] == card.sha256 and body["lipschitz_bound"] == card.lipschitz_bound
    assert PackageStore(repository).versions("tiny") == ["1"]

    job = client.post(
        "/v1/certify?wait=30",
        json={"model": "tiny", "image": IMAGE, "n": 100, "methods": ["smoothing", "margin"]},
        headers=USER,
    ).json()
    assert job["status"] == "succeeded", job
    assert job["result"]["provenance"]["model"]["sha256"] == card.sha256

    assert push(client, packages["2"]).status_code == 201
    listed = client.get("/v1/models/tiny", headers=USER).json()
    assert listed["version"] == "2"
    assert [(v["version"], v["status"]) for v in listed["versions"]] == [
        ("1", "available"),
        ("2", "available"),
    ]
    assert listed["versions"][0]["metrics"] == {"clean_accuracy": 0.5}


def test_only_admin_keys_change_the_models(client, packages, repository):
    refused = push(client, packages["1"], headers=USER)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert push(client, packages["1"], headers={}).status_code == 401
    retire = client.delete("/v1/models/tiny/versions/1", headers=USER)
    assert retire.status_code == 403
    assert PackageStore(repository).model_ids() == []


def test_refused_packages_get_422_and_leave_nothing_stored(client, packages, repository):
    files = packages["1"]
    bound = check_package(files).recomputed_bound
    cases = {
        "SHA-256": {**files, "model.safetensors": files["model.safetensors"][:-1] + b"\0"},
        "above the card's": with_card(files, lipschitz_bound=bound / 2),
        "do not fit": with_card(files, config={"width": 4, "no_such_option": 1}),
    }
    for message, package in cases.items():
        response = push(client, package)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_package"
        assert message in response.json()["error"]["message"]
    assert not PackageStore(repository).model_ids()


def test_a_version_is_immutable(client, packages):
    assert push(client, packages["1"]).status_code == 201
    again = push(client, with_card(packages["1"], created="2030-01-01T00:00:00+00:00"))
    assert again.status_code == 409 and again.json()["error"]["code"] == "version_exists"


def test_retiring_lets_queued_jobs_finish_and_refuses_new_ones(client, packages):
    for version in ("1", "2"):
        assert push(client, packages[version]).status_code == 201
    long = {"model": "tiny", "image": IMAGE, "n": 200_000, "batch_size": 10}
    blocker = client.post("/v1/certify", json=long, headers=USER).json()
    queued = client.post(
        "/v1/certify", json={"model": "tiny", "image": IMAGE, "n": 50}, headers=USER
    ).json()
    assert queued["status"] == "queued" and queued["model"]["version"] == "2"

    retired = client.delete("/v1/models/tiny/versions/2", headers=ADMIN)
    assert retired.status_code == 200, retired.text
    assert retired.json()["status"] == "retired" and retired.json()["retired_by"]
    named = client.post(
        "/v1/certify", json={"model": "tiny", "version": "2", "image": IMAGE}, headers=USER
    )
    assert named.status_code == 404 and "retired" in named.json()["error"]["message"]
    default = client.get("/v1/models/tiny", headers=USER).json()
    assert default["version"] == "1"
    assert [v["status"] for v in default["versions"]] == ["available", "retired"]

    assert client.get(f"/v1/jobs/{queued['id']}", headers=USER).json()["status"] == "queued"
    client.delete(f"/v1/jobs/{blocker['id']}", headers=USER)
    finished = wait_until_finished(client, queued["id"], headers=USER)
    assert finished["status"] == "succeeded", finished
    assert finished["result"]["provenance"]["model"]["version"] == "2"
    assert client.delete("/v1/models/tiny/versions/9", headers=ADMIN).status_code == 404
    unknown = client.delete("/v1/models/nope/versions/1", headers=ADMIN)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"].startswith("no model 'nope'; the models are")


def test_readiness_lists_retired_versions_and_needs_no_withdrawn_model(client, packages, tmp_path):
    """A retired version is listed as retired, never as available; a model whose every version
    is retired was withdrawn on purpose and does not take the gateway out of service, unless
    no model is left in service at all."""
    for version in ("1", "2"):
        assert push(client, packages[version]).status_code == 201
    assert client.delete("/v1/models/tiny/versions/2", headers=ADMIN).status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert [v["status"] for v in ready.json()["models"]] == ["available", "retired"]
    assert client.delete("/v1/models/tiny/versions/1", headers=ADMIN).status_code == 200
    alone = client.get("/readyz")
    assert alone.status_code == 503, alone.text
    assert alone.json()["status"] == "unavailable" and "retired" in alone.json()["detail"]
    assert [v["status"] for v in alone.json()["models"]] == ["retired", "retired"]
    other = package_files(save_package(tmp_path / "other", model_id="other"))
    assert push(client, other).status_code == 201
    beside = client.get("/readyz")
    assert beside.status_code == 200, beside.text
    assert {(v["id"], v["status"]) for v in beside.json()["models"]} == {
        ("tiny", "retired"),
        ("other", "available"),
    }


def test_a_deployment_without_its_own_repository_refuses_changes(packages):
    settings = embedded_settings(admin_api_keys=("admin-key",))
    with TestClient(create_app(settings, SmallModelSource())) as client:
        response = push(client, packages["1"])
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "repository_not_configured"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_an_onnx_package_is_certified_by_smoothing_and_refuses_margin(client, tmp_path):
    pytest.importorskip("onnxruntime")
    from models.onnx_classifier import import_onnx, parse_normalization

    torch.manual_seed(0)
    graph = io.BytesIO()
    torch.onnx.export(
        nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval(),
        (torch.zeros(1, 1, 8, 8),),
        graph,
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
    )
    (tmp_path / "outside.onnx").write_bytes(graph.getvalue())
    card = import_onnx(
        tmp_path / "outside.onnx",
        model_id="outside",
        input_shape=(1, 8, 8),
        class_names=["a", "b", "c"],
        sigma=0.25,
        normalization=parse_normalization(None, 1),
        repository=tmp_path / "staging",
    )
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as package:
        for path in (tmp_path / "staging" / "outside" / "1").iterdir():
            package.write(path, f"outside/1/{path.name}")
    parts = [("package", ("outside.zip", archive.getvalue(), "application/zip"))]
    pushed = client.post("/v1/models", files=parts, headers=ADMIN)
    assert pushed.status_code == 201, pushed.text
    assert (pushed.json()["architecture"], pushed.json()["lipschitz_bound"]) == ("onnx", None)
    assert pushed.json()["sha256"] == card.sha256

    margin = client.post(
        "/v1/certify",
        json={"model": "outside", "image": IMAGE, "methods": ["margin"]},
        headers=USER,
    )
    assert margin.status_code == 422
    assert margin.json()["error"]["code"] == "no_lipschitz_bound"
    smoothing = client.post(
        "/v1/certify?wait=30",
        json={"model": "outside", "image": IMAGE, "methods": ["smoothing"], "n": 100},
        headers=USER,
    ).json()
    assert smoothing["status"] == "succeeded", smoothing
