"""The API end to end in embedded mode: HTTP in, certificates out, as the library computes them."""

from __future__ import annotations

import base64
import hashlib
import time

import numpy as np
import torch
from fastapi.testclient import TestClient

import certify
from service.imaging import decode_image
from service.main import create_app
from tests.service.conftest import embedded_settings, png_bytes, wait_until_finished
from tests.workers.small_models import (
    SMALL_MODEL_ID,
    SMALL_MODEL_SIGMA,
    SmallModelSource,
    build_small_model,
)


def test_multipart_certify_polls_to_the_radius_the_library_computes(client):
    data = png_bytes(seed=1)
    response = client.post(
        "/v1/certify",
        files={"file": ("digit.png", data, "image/png")},
        data={"model": SMALL_MODEL_ID, "n": "300", "n0": "32", "batch_size": "64", "seed": "7"},
    )
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    job = wait_until_finished(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["samples_done"] == job["progress"]["samples_planned"] == 332 + 1

    result = job["result"]
    assert set(result["certificates"]) == {"smoothing", "margin"}
    assert result["input_space"]["shape"] == [1, 8, 8]
    tensor = torch.from_numpy(decode_image(data, (1, 8, 8), max_pixels=10**6).tensor)
    model = build_small_model()
    expected = certify.smoothing_certify(
        model, tensor, sigma=SMALL_MODEL_SIGMA, n0=32, n=300, alpha=0.001, batch_size=64, seed=7
    )
    smoothing = result["certificates"]["smoothing"]
    assert smoothing["radius"] == expected.radius
    assert smoothing["label"] == expected.label
    assert smoothing["details"]["counts"] == list(expected.counts)
    margin = certify.margin_certify(model, tensor, ensemble=1, seed=7)
    assert result["certificates"]["margin"]["radius"] == margin.radius
    assert result["certificates"]["margin"]["label"] == margin.label
    assert result["certificates"]["margin"]["class_name"] == f"digit {margin.label}"

    provenance = result["provenance"]
    assert provenance["model"]["id"] == SMALL_MODEL_ID and provenance["model"]["sha256"]
    assert provenance["seed"] == "7" and provenance["parameters"]["n"] == 300
    assert provenance["input_sha256"] == job["input"]["sha256"]
    assert provenance["package_version"] and provenance["torch_version"] == torch.__version__
    assert provenance["timings"]["certification_seconds"] > 0
    assert "resized 28×28 to 8×8" in " ".join(job["input"]["transforms"])


def test_wait_answers_200_with_the_result(client):
    response = client.post(
        "/v1/certify?wait=20",
        json={
            "model": SMALL_MODEL_ID,
            "image_base64": base64.b64encode(png_bytes()).decode(),
            "n": 100,
            "seed": 3,
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    assert response.json()["result"]["provenance"]["seed"] == "3"


def test_base64_with_line_breaks_or_a_data_url_prefix_is_the_same_image(client):
    encoded = base64.b64encode(png_bytes()).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + "\n"
    hashes = set()
    for text in (encoded, wrapped, "data:image/png;base64," + encoded):
        response = client.post(
            "/v1/certify",
            json={"model": SMALL_MODEL_ID, "image_base64": text, "methods": ["margin"]},
        )
        assert response.status_code == 202, response.text
        hashes.add(response.json()["input"]["sha256"])
    assert hashes == {hashlib.sha256(png_bytes()).hexdigest()}


def test_json_nested_array_with_all_three_methods(client):
    image = np.random.default_rng(0).random((8, 8)).tolist()
    response = client.post(
        "/v1/certify?wait=20",
        json={
            "model": SMALL_MODEL_ID,
            "image": image,
            "methods": ["radius_test", "margin", "smoothing"],
            "target_radius": 0.05,
            "n": 200,
            "ensemble": 3,
            "seed": 11,
        },
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert list(result["certificates"]) == ["radius_test", "margin", "smoothing"]
    radius_test = result["certificates"]["radius_test"]
    assert radius_test["details"]["decision"] in ("certified", "not_certified", "undecided")
    assert (radius_test["label"] is None) == (radius_test["details"]["decision"] != "certified")
    assert len(result["certificates"]["margin"]["details"]["omega_seeds"]) == 3
    assert response.json()["input"]["format"] == "array"
    expected = np.asarray(image, dtype=np.float32)[np.newaxis].tobytes()
    assert response.json()["input"]["tensor_sha256"] == hashlib.sha256(expected).hexdigest()


def test_batch_of_images_reports_items_and_counts(client):
    files = [("files", (f"img{i}.png", png_bytes(seed=i), "image/png")) for i in range(4)]
    response = client.post(
        "/v1/batches", files=files, data={"model": SMALL_MODEL_ID, "n": "100", "seed": "5"}
    )
    assert response.status_code == 202, response.text
    batch = response.json()
    assert [item["filename"] for item in batch["items"]] == [f"img{i}.png" for i in range(4)]
    for item in batch["items"]:
        wait_until_finished(client, item["job_id"])
    batch = client.get(batch["url"]).json()
    assert batch["status"] == "finished"
    assert batch["counts"]["succeeded"] == 4 and sum(batch["counts"].values()) == 4
    assert all(item["job"]["batch_id"] == batch["id"] for item in batch["items"])


def test_batch_as_json(client):
    images = [{"image": np.full((8, 8), v).tolist(), "filename": f"v{v}"} for v in (0.2, 0.8)]
    response = client.post("/v1/batches", json={"model": SMALL_MODEL_ID, "images": images, "n": 50})
    assert response.status_code == 202, response.text
    assert [item["filename"] for item in response.json()["items"]] == ["v0.2", "v0.8"]


def test_cancel_a_running_job_stops_it_between_batches():
    with TestClient(create_app(embedded_settings(), SmallModelSource())) as client:
        response = client.post(
            "/v1/certify",
            json={
                "model": SMALL_MODEL_ID,
                "image": np.zeros((8, 8)).tolist(),
                "n": 200_000,
                "batch_size": 10,
                "methods": ["smoothing"],
            },
        )
        job_id = response.json()["id"]
        while client.get(f"/v1/jobs/{job_id}").json()["progress"]["samples_done"] == 0:
            time.sleep(0.02)
        cancelled = client.delete(f"/v1/jobs/{job_id}")
        assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"]
        job = wait_until_finished(client, job_id, timeout=10)
        assert job["status"] == "cancelled"
        assert job["progress"]["samples_done"] < 200_000
        again = client.delete(f"/v1/jobs/{job_id}")
        assert again.status_code == 202 and again.json()["status"] == "cancelled"


def test_cancel_a_queued_job_at_once_and_a_finished_one_is_a_conflict():
    image = np.zeros((8, 8)).tolist()
    one_job_at_a_time = embedded_settings(worker_jobs_per_process=1)
    with TestClient(create_app(one_job_at_a_time, SmallModelSource())) as client:
        blocker = client.post(
            "/v1/certify",
            json={"model": SMALL_MODEL_ID, "image": image, "n": 200_000, "batch_size": 10},
        ).json()
        queued = client.post("/v1/certify", json={"model": SMALL_MODEL_ID, "image": image}).json()
        response = client.delete(f"/v1/jobs/{queued['id']}")
        assert response.status_code == 202
        assert response.json()["status"] == "cancelled" and response.json()["started_at"] is None
        client.delete(f"/v1/jobs/{blocker['id']}")
        wait_until_finished(client, blocker["id"])

        done = client.post(
            "/v1/certify?wait=20", json={"model": SMALL_MODEL_ID, "image": image, "n": 50}
        ).json()
        response = client.delete(f"/v1/jobs/{done['id']}")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "job_finished"


def test_models_health_readiness_and_docs(client):
    models = client.get("/v1/models").json()["models"]
    assert [m["id"] for m in models] == [SMALL_MODEL_ID]
    card = client.get(f"/v1/models/{SMALL_MODEL_ID}").json()
    assert card["input_shape"] == [1, 8, 8] and card["sigmas"] == [SMALL_MODEL_SIGMA]
    assert 0 < card["lipschitz_bound"] <= 2
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["mode"] == "embedded"
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/v1/certify"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(content)
    assert "file" in content["multipart/form-data"]["schema"]["properties"]
    assert client.get("/docs").status_code == 200


def test_readiness_fails_when_the_repository_has_no_models():
    class EmptySource(SmallModelSource):
        def model_ids(self) -> list[str]:
            return []

    with TestClient(create_app(embedded_settings(), EmptySource())) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert "no models" in response.json()["detail"]


def test_every_reference_in_the_openapi_document_resolves(client):
    """``/docs`` renders request bodies only if their ``$ref`` pointers exist in the document."""
    spec = client.get("/openapi.json").json()

    def references(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from references(value)
        elif isinstance(node, list):
            for item in node:
                yield from references(item)

    found = list(references(spec))
    assert found
    for reference in found:
        assert reference.startswith("#/"), reference
        node = spec
        for part in reference[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert part in node, f"{reference} does not resolve"
            node = node[part]
    body = spec["paths"]["/v1/batches"]["post"]["requestBody"]["content"]["application/json"]
    images = body["schema"]["properties"]["images"]["items"]
    assert {"image_base64", "image", "filename"} <= set(images["properties"])
