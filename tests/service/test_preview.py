"""``POST /v1/preview`` (the input as the model sees it, noisy samples at σ), ``GET /v1/defaults``
and the page's static files served by the gateway itself."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from service.preview import NOISY_SAMPLES
from tests.service.conftest import png_bytes
from tests.service.test_docs import references
from tests.workers.small_models import SMALL_MODEL_ID, SMALL_MODEL_SIGMA


def pixels(data_url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix) :]))))


def preview(client, data: bytes, **fields: str):
    return client.post(
        "/v1/preview",
        files={"file": ("image.png", data)},
        data={"model": SMALL_MODEL_ID, **fields},
    )


def test_the_preview_is_the_tensor_a_job_certifies(client):
    image = png_bytes(size=(20, 30), seed=3)
    shown = preview(client, image, seed="11")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    job = client.post(
        "/v1/certify",
        files={"file": ("image.png", image)},
        data={"model": SMALL_MODEL_ID, "methods": "margin", "seed": "11"},
    ).json()
    # The same decoding as the job's: the same certified tensor, described the same way.
    assert body["input"] == job["input"]
    model_input = pixels(body["model_input"])
    assert model_input.shape == (8, 8)
    assert pixels(body["received"]).shape == (30, 20)
    received = np.asarray(Image.open(io.BytesIO(image)))
    assert np.array_equal(pixels(body["received"]), received)
    # ‖x‖₂ of the certified tensor, within the PNG's 8-bit rounding of it.
    assert body["input_norm"] == pytest.approx(np.linalg.norm(model_input / 255.0), abs=0.02)
    assert body["noise_norm"] == pytest.approx(SMALL_MODEL_SIGMA * 8)
    assert body["sigma"] == SMALL_MODEL_SIGMA and body["seed"] == "11"
    samples = [pixels(url) for url in body["noisy_samples"]]
    assert len(samples) == NOISY_SAMPLES
    assert all(s.shape == (8, 8) and not np.array_equal(s, model_input) for s in samples)


def test_the_noise_replays_from_its_seed_and_differs_without_one(client):
    image = png_bytes(size=(8, 8), seed=4)
    first = preview(client, image, seed="5").json()["noisy_samples"]
    assert preview(client, image, seed="5").json()["noisy_samples"] == first
    assert preview(client, image).json()["noisy_samples"] != first


@pytest.mark.parametrize(
    ("data", "fields", "status", "code"),
    [
        (png_bytes(), {"sigma": "0.3"}, 422, "unsupported_sigma"),
        (b"plain text", {}, 422, "not_an_image"),
        (png_bytes(), {"model": "no-such-model"}, 404, "unknown_model"),
    ],
)
def test_a_preview_is_refused_as_a_job_would_be(client, data, fields, status, code):
    response = client.post(
        "/v1/preview",
        files={"file": ("image", data)},
        data={"model": SMALL_MODEL_ID, **fields},
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_the_defaults_are_the_services_settings(client, settings):
    defaults = client.get("/v1/defaults").json()
    assert defaults["n"] == settings.default_n and defaults["alpha"] == settings.default_alpha
    assert defaults["methods"] == ["smoothing", "margin"]
    assert defaults["available_methods"]["margin"]["needs_lipschitz_bound"] is True
    assert defaults["available_methods"]["smoothing"]["needs_lipschitz_bound"] is False


def test_the_page_loads_only_what_the_gateway_serves(client):
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    urls = [url for url in references(page.text) if not url.startswith("data:")]
    assert sorted(urls) == ["/docs", "/web/app.js", "/web/style.css"]
    for url in urls:
        assert client.get(url).status_code == 200
    for asset in ("/web/app.js", "/web/style.css", "/"):
        text = client.get(asset).text
        # No CDN, font or script from elsewhere (the SVG namespace is a name, not a request).
        hosts = re.findall(r"(?:https?:)?//([\w.-]+\.[a-z]{2,})", text)
        assert set(hosts) <= {"www.w3.org"}, (asset, hosts)


def test_the_pages_files_are_package_data():
    # A wheel carries them too (not only an editable install): each matches a package-data glob.
    import fnmatch
    import tomllib

    from service.api.routes.page import WEB_DIRECTORY

    globs = tomllib.loads((WEB_DIRECTORY.parents[1] / "pyproject.toml").read_text())["tool"][
        "setuptools"
    ]["package-data"]["service"]
    files = [p.relative_to(WEB_DIRECTORY.parent).as_posix() for p in WEB_DIRECTORY.iterdir()]
    assert {"web/index.html", "web/app.js", "web/style.css"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch(name, glob) for glob in globs), name
