"""Every bad input is a 4xx JSON error with an actionable message, never a 500."""

from __future__ import annotations

import base64
import io
import json
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.main import create_app
from tests.service.conftest import embedded_settings, png_bytes
from tests.workers.small_models import SMALL_MODEL_ID, SmallModelSource

MODEL = {"model": SMALL_MODEL_ID}


def gif_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


def large_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(data: bytes, filename: str = "x.png", **fields: str) -> dict:
    return {"files": {"file": (filename, data, "application/octet-stream")}, "data": fields}


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_header(header: str) -> bytes:
    """An ``.npy`` file with the header dictionary ``header``, padded, and 512 zero bytes."""
    text = header.encode()
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + b"\x00" * 512


CASES = {
    "not an image": (multipart(b"just some text, not pixels", **MODEL), 422, "not_an_image"),
    "empty file": (multipart(b"", **MODEL), 422, "not_an_image"),
    "truncated PNG": (multipart(png_bytes()[:60], **MODEL), 422, "truncated_image"),
    "unsupported type (GIF)": (multipart(gif_bytes(), **MODEL), 415, "unsupported_media_type"),
    "too many pixels": (multipart(large_png(1100), **MODEL), 413, "image_too_large"),
    "unknown model": (multipart(png_bytes(), model="no-such-model"), 404, "unknown_model"),
    "unsupported sigma": (
        multipart(png_bytes(), sigma="0.5", **MODEL),
        422,
        "unsupported_sigma",
    ),
    "n too large": (multipart(png_bytes(), n="5000", **MODEL), 422, "parameter_out_of_bounds"),
    "n zero": (multipart(png_bytes(), n="0", **MODEL), 422, "parameter_out_of_bounds"),
    "batch_size too large": (
        multipart(png_bytes(), batch_size="100000", **MODEL),
        422,
        "parameter_out_of_bounds",
    ),
    "n0 negative": (multipart(png_bytes(), n0="-3", **MODEL), 422, "parameter_out_of_bounds"),
    "alpha outside (0, 0.5)": (
        multipart(png_bytes(), alpha="0.7", **MODEL),
        422,
        "parameter_out_of_bounds",
    ),
    "alpha below its floor": (
        multipart(png_bytes(), alpha="1e-120", **MODEL),
        422,
        "parameter_out_of_bounds",
    ),
    "n not a number": (multipart(png_bytes(), n="many", **MODEL), 422, "invalid_request"),
    "unknown method": (
        multipart(png_bytes(), methods="smoothing,guess", **MODEL),
        422,
        "invalid_request",
    ),
    "radius test without target": (
        multipart(png_bytes(), methods="radius_test", **MODEL),
        422,
        "invalid_request",
    ),
    "no model field": (multipart(png_bytes()), 422, "invalid_request"),
    "unknown form field": (multipart(png_bytes(), colour="red", **MODEL), 422, "invalid_request"),
    "file under another name": (
        {"data": MODEL, "files": {"image": ("a.png", png_bytes())}},
        422,
        "invalid_request",
    ),
    "file sent as a text field": (
        {"data": {**MODEL, "file": "scan.png"}, "files": {"other": ("", b"")}},  # no filename
        422,
        "invalid_request",
    ),
    "no file": ({"data": MODEL, "files": {}}, 415, "unsupported_media_type"),
    "malformed JSON": (
        {
            "content": b'{"model": "tiny-hycas", "image": [[0.1, ',
            "headers": {"content-type": "application/json"},
        },
        400,
        "malformed_json",
    ),
    "JSON without an image": ({"json": MODEL}, 422, "invalid_request"),
    "JSON with two images": (
        {"json": {**MODEL, "image": [[0.5]], "image_base64": base64.b64encode(b"x").decode()}},
        422,
        "invalid_request",
    ),
    "invalid base64": ({"json": {**MODEL, "image_base64": "not*base64"}}, 422, "invalid_request"),
    "ragged nested array": (
        {"json": {**MODEL, "image": [[0.1, 0.2], [0.3]]}},
        422,
        "invalid_image",
    ),
    "array values outside [0, 1]": (
        {"json": {**MODEL, "image": [[0.5, 3.0]]}},
        422,
        "invalid_image",
    ),
    "array of strings": ({"json": {**MODEL, "image": [["a", "b"]]}}, 422, "invalid_image"),
    "array of numbers as strings": (
        {"json": {**MODEL, "image": [["0.5", "0.2"]]}},
        422,
        "invalid_image",
    ),
    "array of booleans": ({"json": {**MODEL, "image": [[True, False]]}}, 422, "invalid_image"),
    "array with a null": ({"json": {**MODEL, "image": [[0.5, None]]}}, 422, "invalid_image"),
    "a boolean n": ({"json": {**MODEL, "image": [[0.5]], "n": True}}, 422, "invalid_request"),
    "unknown JSON field": (
        {"json": {**MODEL, "image": [[0.5]], "colour": 1}},
        422,
        "invalid_request",
    ),
    "JSON that is not an object": ({"json": [1, 2, 3]}, 422, "invalid_request"),
    "unsupported content type": (
        {"content": b"raw", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    "negative wait": ({"json": {**MODEL, "image": [[0.5]]}, "params": {"wait": "-1"}}, 422, None),
    "a method that is not a string": (
        {"json": {**MODEL, "image": [[0.5]], "methods": ["margin", 1]}},
        422,
        "invalid_request",
    ),
    "a number too large for a float in the array": (
        {"json": {**MODEL, "image": [[10**400, 0.5]]}},
        422,
        "invalid_image",
    ),
    "JSON nested too deeply": (
        {
            "content": b'{"model": "tiny-hycas", "image": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            "headers": {"content-type": "application/json"},
        },
        400,
        "malformed_json",
    ),
    "JSON integer with too many digits": (
        {
            "content": b'{"model": "tiny-hycas", "image": [[0.5]], "n": ' + b"7" * 5000 + b"}",
            "headers": {"content-type": "application/json"},
        },
        400,
        "malformed_json",
    ),
    "seed of a superscript digit": (multipart(png_bytes(), seed="²", **MODEL), 422, None),
    "seed of Arabic-Indic digits": (multipart(png_bytes(), seed="٣", **MODEL), 422, None),
    "JSON array with an empty axis": (
        {"json": {**MODEL, "image": [[[]], [[]], [[]]]}},
        422,
        "invalid_image",
    ),
    ".npy with an empty axis": (multipart(npy_bytes(np.zeros((3, 0, 8))), **MODEL), 422, None),
    ".npy header with unbalanced brackets": (
        multipart(
            npy_header("{'descr': '<f8', 'fortran_order': False, 'shape': (8, 8), "), **MODEL
        ),
        422,
        "invalid_image",
    ),
    ".npy header with a boolean dimension": (
        multipart(
            npy_header("{'descr': '<f8', 'fortran_order': False, 'shape': (True, 8), }"), **MODEL
        ),
        422,
        "invalid_image",
    ),
    "infinite target_radius": (
        {
            "content": b'{"model": "tiny-hycas", "image": [[0.5]], "methods": ["radius_test"], '
            b'"target_radius": 1e999}',
            "headers": {"content-type": "application/json"},
        },
        422,
        "invalid_request",
    ),
}


@pytest.fixture(scope="module")
def small_limits_client():
    settings = embedded_settings(max_image_pixels=1000 * 1000, max_n=1000, max_upload_bytes=50_000)
    with TestClient(create_app(settings, SmallModelSource())) as client:
        yield client


@pytest.mark.parametrize("case", list(CASES))
def test_bad_certify_request_is_a_4xx_with_a_message(small_limits_client, case):
    request, status, code = CASES[case]
    response = small_limits_client.post("/v1/certify", **request)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if code is not None:
        assert error["code"] == code
    assert len(error["message"]) > 10
    assert "invalid literal" not in error["message"]  # Python's words, not the service's


@pytest.mark.parametrize(
    ("request_kwargs", "says"),
    [
        (
            {"files": {"file": ("a.png", png_bytes())}, "data": {"model": [SMALL_MODEL_ID] * 2}},
            "several 'model' fields",
        ),
        (
            {
                "files": [("file", ("a.png", png_bytes())), ("file", ("b.png", png_bytes()))],
                "data": MODEL,
            },
            "more than one file",
        ),
    ],
    ids=["two model fields", "two files"],
)
def test_a_form_with_a_field_twice_says_so(small_limits_client, request_kwargs, says):
    response = small_limits_client.post("/v1/certify", **request_kwargs)
    assert response.status_code == 422
    assert says in response.json()["error"]["message"]


def test_too_many_bytes_are_counted_while_reading_not_from_the_header(small_limits_client):
    body = b"x" * 200_000

    def chunks():
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = small_limits_client.post(
        "/v1/certify",
        content=chunks(),  # streamed: no Content-Length header at all
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_a_file_over_the_limit_is_refused_with_its_size(small_limits_client):
    response = small_limits_client.post(
        "/v1/certify", **multipart(b"\x93NUMPY" + b"0" * 60_000, **MODEL)
    )
    assert response.status_code == 413
    assert "60,006 bytes; the limit is 50,000 bytes" in response.json()["error"]["message"]


def test_a_declared_length_over_the_limit_is_refused_before_reading(small_limits_client):
    response = small_limits_client.post(
        "/v1/certify",
        content=b"{}",
        headers={"content-type": "application/json", "content-length": "99999999"},
    )
    assert response.status_code == 413


def test_a_bad_batch_item_refuses_the_batch_and_names_the_item(small_limits_client):
    files = [
        ("files", ("good.png", png_bytes(), "image/png")),
        ("files", ("bad.png", b"not an image at all", "image/png")),
    ]
    response = small_limits_client.post("/v1/batches", files=files, data=MODEL)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("image 1: ")


def test_too_many_batch_images_and_empty_batches_are_refused():
    settings = embedded_settings(max_batch_images=2)
    with TestClient(create_app(settings, SmallModelSource())) as client:
        files = [("files", (f"{i}.png", png_bytes(), "image/png")) for i in range(3)]
        response = client.post("/v1/batches", files=files, data=MODEL)
        assert response.status_code == 413
        assert "3 images; the limit is 2" in response.json()["error"]["message"]
        files = [("files", (f"{i}.png", png_bytes(), "image/png")) for i in range(5)]
        response = client.post("/v1/batches", files=files, data=MODEL)
        assert response.status_code == 413
        assert "more than 2 images; the limit is 2" in response.json()["error"]["message"]
        response = client.post("/v1/batches", json={**MODEL, "images": []})
        assert response.status_code == 422
        response = client.post("/v1/batches", data=MODEL, files={"unused": ("", b"")})
        assert response.status_code == 422


def test_a_batch_over_its_total_byte_limit_is_refused_while_reading():
    settings = embedded_settings(max_upload_bytes=50_000, max_batch_bytes=120_000)
    with TestClient(create_app(settings, SmallModelSource())) as client:
        image = b"\x93NUMPY" + b"0" * 40_000  # each image is under its own limit
        files = [("files", (f"{i}.npy", image, "application/octet-stream")) for i in range(5)]
        response = client.post("/v1/batches", files=files, data=MODEL)
        assert response.status_code == 413
        message = response.json()["error"]["message"]
        assert "add up to 200,030 bytes; the limit is 120,000 bytes" in message
        files = [("files", (f"{i}.npy", image, "application/octet-stream")) for i in range(9)]
        response = client.post("/v1/batches", files=files, data=MODEL)
        assert response.status_code == 413  # refused while reading: the body is over its limit
        assert "the request is larger than" in response.json()["error"]["message"]
        encoded = base64.b64encode(image).decode()
        images = [{"image_base64": encoded} for _ in range(5)]
        response = client.post("/v1/batches", json={**MODEL, "images": images})
        assert response.status_code == 413


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("get", "/v1/jobs/0123456789abcdef", 404, "not_found"),
        ("delete", "/v1/jobs/0123456789abcdef", 404, "not_found"),
        ("get", "/v1/batches/0123456789abcdef", 404, "not_found"),
        ("get", "/v1/models/no-such-model", 404, "unknown_model"),
        ("get", "/v1/nothing-here", 404, "not_found"),
        ("put", "/v1/certify", 405, "method_not_allowed"),
    ],
)
def test_unknown_resources_are_json_404s(small_limits_client, method, path, status, code):
    response = getattr(small_limits_client, method)(path)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_json_errors_never_echo_the_image(small_limits_client):
    secret = [[0.123456789] * 8] * 7 + [[7.5] * 8]
    response = small_limits_client.post("/v1/certify", json={**MODEL, "image": secret})
    assert response.status_code == 422
    assert "0.123456789" not in json.dumps(response.json())


@pytest.fixture(scope="module")
def repository_client():
    """The app on the shipped model repository (no model is loaded by these requests)."""
    with TestClient(create_app(embedded_settings())) as client:
        yield client


@pytest.mark.parametrize(
    "model_id", ["", "../../etc", "Digits-HyCAS", "digits hycas", "a" * 5000, "\u00e9"]
)
def test_a_string_that_is_not_a_model_id_is_an_unknown_model(repository_client, model_id):
    responses = [repository_client.post("/v1/certify", json={"model": model_id, "image": [[0]]})]
    if model_id and "/" not in model_id:  # else the path is another route
        responses.append(repository_client.get("/v1/models/" + quote(model_id, safe="")))
    for response in responses:
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert error["code"] == "unknown_model"
        assert "digits-hycas" in error["message"] and len(error["message"]) < 400


def test_an_unknown_model_does_not_reveal_the_repository_folder(repository_client):
    response = repository_client.get("/v1/models/no-such-model")
    assert response.status_code == 404
    assert "model_repository" not in response.json()["error"]["message"]
    assert "digits-hycas" in response.json()["error"]["message"]
