"""The shipped model ``digits-hycas`` through the real model repository (issue 4).

These run once ``models.load`` exists; until then they are skipped with that reason.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import load_digits

import certify
import models
from service.cli import main
from service.main import create_app
from tests.service.conftest import embedded_settings, wait_until_finished

pytestmark = pytest.mark.skipif(
    not hasattr(models, "load"), reason="models.load (the model repository, issue 4) not landed"
)

MODEL_ID = "digits-hycas"


def digit_npy(index: int = 0) -> tuple[bytes, np.ndarray]:
    """A handwritten digit from scikit-learn's bundled set, in [0, 1] as the card specifies."""
    pixels = (load_digits().images[index] / 16.0).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, pixels)
    return buffer.getvalue(), pixels


def test_embedded_serve_certifies_a_digit_as_the_library_does():
    data, pixels = digit_npy()
    with TestClient(create_app(embedded_settings(default_n=1000))) as client:
        assert MODEL_ID in [m["id"] for m in client.get("/v1/models").json()["models"]]
        response = client.post(
            "/v1/certify",
            files={"file": ("digit.npy", data, "application/octet-stream")},
            data={"model": MODEL_ID, "seed": "123"},
        )
        assert response.status_code == 202, response.text
        job = wait_until_finished(client, response.json()["id"], timeout=120)
    assert job["status"] == "succeeded", job["error"]
    model, _ = models.load(MODEL_ID)
    parameters = job["parameters"]
    expected = certify.smoothing_certify(
        model.eval(),
        torch.from_numpy(pixels)[None],
        sigma=parameters["sigma"],
        n0=parameters["n0"],
        n=parameters["n"],
        alpha=parameters["alpha"],
        batch_size=parameters["batch_size"],
        seed=123,
    )
    smoothing = job["result"]["certificates"]["smoothing"]
    assert smoothing["radius"] == expected.radius and smoothing["label"] == expected.label
    assert job["result"]["provenance"]["model"]["id"] == MODEL_ID


def test_embedded_serve_certifies_a_digit_png_as_the_library_does():
    """The issue's acceptance: a digit PNG through HTTP, polled to success, the library's radius."""
    gray = np.round(load_digits().images[3] / 16.0 * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buffer, format="PNG")
    with TestClient(create_app(embedded_settings(default_n=1000))) as client:
        response = client.post(
            "/v1/certify",
            files={"file": ("digit.png", buffer.getvalue(), "image/png")},
            data={"model": MODEL_ID, "seed": "77"},
        )
        assert response.status_code == 202, response.text
        job = wait_until_finished(client, response.json()["id"], timeout=120)
    assert job["status"] == "succeeded", job["error"]
    assert job["input"]["format"] == "png"
    model, _ = models.load(MODEL_ID)
    image = torch.from_numpy((gray / 255.0).astype(np.float32))[None]
    parameters = job["parameters"]
    expected = certify.smoothing_certify(
        model.eval(),
        image,
        sigma=parameters["sigma"],
        n0=parameters["n0"],
        n=parameters["n"],
        alpha=parameters["alpha"],
        batch_size=parameters["batch_size"],
        seed=77,
    )
    smoothing = job["result"]["certificates"]["smoothing"]
    assert smoothing["radius"] == expected.radius and smoothing["label"] == expected.label
    margin = certify.margin_certify(model.eval(), image, ensemble=parameters["ensemble"], seed=77)
    assert job["result"]["certificates"]["margin"]["radius"] == margin.radius


def test_hycas_certify_prints_the_result_as_json(tmp_path, capsys):
    data, _ = digit_npy(1)
    path = tmp_path / "digit.npy"
    path.write_bytes(data)
    assert main(["certify", str(path), "--model", MODEL_ID, "--json", "--seed", "5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["certificates"]) == {"smoothing", "margin"}
    assert result["provenance"]["seed"] == "5"
