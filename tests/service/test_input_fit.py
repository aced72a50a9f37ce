"""Inputs held against the card's intended input: warnings that stop a careful reader, and a
422 ``input_mismatch`` in strict mode (issue 16)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pydicom
import pydicom.data
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import load_digits

from models.card import IntendedInput
from service.cli import main
from service.imaging import decode_array, decode_image
from service.input_fit import input_fit_warnings
from service.main import create_app
from tests.service.conftest import embedded_settings, png_bytes

MODEL_ID = "digits-hycas"
DIGITS = IntendedInput("handwritten digit", 1, (8, 8), "grey", ())
CHEST = IntendedInput("chest X-ray", 1, (28, 28), "grey", ("DX", "CR"))
DERMA = IntendedInput("dermatoscopy", 3, (28, 28), "rgb", ())
MAX_PIXELS = 4096 * 4096


def ct_slice() -> bytes:
    with open(pydicom.data.get_testdata_file("CT_small.dcm"), "rb") as file:
        return file.read()


def digit_png() -> bytes:
    """A handwritten digit at its native 8×8, grey: exactly what the digits model was made for."""
    grey = np.round(load_digits().images[3] / 16.0 * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(embedded_settings(default_n=100, default_n0=10))) as test_client:
        yield test_client


def certify(client: TestClient, data: bytes, name: str, **fields: str):
    return client.post(
        "/v1/certify?wait=60",
        files={"file": (name, data, "application/octet-stream")},
        data={"model": MODEL_ID, "seed": "1", **fields},
    )


def test_a_ct_slice_sent_to_the_digits_model_is_answered_with_warnings_that_say_so(client):
    response = certify(client, ct_slice(), "ct.dcm")
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["input"]["modality"] == "CT" and job["input"]["original_size"] == [128, 128]
    assert job["input"]["resize_factor"] == [16.0, 16.0]
    modality, resize = job["warnings"]
    assert modality == (
        "This model was trained on 8×8 grey handwritten digit images, not on DICOM images; the "
        "input is a DICOM image of modality CT: its answer and radius say nothing about the CT "
        "image."
    )
    assert resize.startswith("The input (128×128) is 16× larger than the 8×8 images")
    assert "(its card accepts at most 2×) and was shrunk to 8×8" in resize
    assert job["result"]["warnings"] == job["input"]["warnings"] == job["warnings"]


@pytest.mark.parametrize("strict", ["true", "1"])
def test_strict_refuses_the_ct_slice_with_the_same_sentences(client, strict):
    response = certify(client, ct_slice(), "ct.dcm", strict=strict)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "input_mismatch"
    assert "strict input checking is on" in error["message"]
    assert "DICOM image of modality CT" in error["message"] and "shrunk to 8×8" in error["message"]


def test_strict_in_a_json_request_and_a_batch(client):
    image_base64 = base64.b64encode(ct_slice()).decode()
    body = {"model": MODEL_ID, "image_base64": image_base64, "strict": True}
    response = client.post("/v1/certify", json=body)
    assert response.status_code == 422 and response.json()["error"]["code"] == "input_mismatch"
    batch = {
        "model": MODEL_ID,
        "strict": True,
        "images": [
            {"image_base64": base64.b64encode(digit_png()).decode()},
            {"image_base64": image_base64},
        ],
    }
    response = client.post("/v1/batches", json=batch)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith("image 1: the input does not fit")


def test_a_matching_digit_png_has_no_warning_even_when_strict(client):
    response = certify(client, digit_png(), "digit.png", strict="true")
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["warnings"] == [] and job["result"]["warnings"] == []
    assert job["input"]["colour"] == "grey" and job["input"]["resize_factor"] == [1.0, 1.0]


def test_the_deployment_default_is_strict_when_set_and_a_request_may_relax_it():
    settings = embedded_settings(default_n=100, default_n0=10, strict_inputs=True)
    with TestClient(create_app(settings)) as client:
        assert certify(client, ct_slice(), "ct.dcm").status_code == 422
        relaxed = certify(client, ct_slice(), "ct.dcm", strict="false")
    assert relaxed.status_code == 200 and len(relaxed.json()["warnings"]) == 2


def test_hycas_certify_prints_the_warnings_and_refuses_when_strict(tmp_path, capsys):
    path = tmp_path / "ct.dcm"
    path.write_bytes(ct_slice())
    common = ["certify", str(path), "--model", MODEL_ID, "--n", "50", "--n0", "10"]
    assert main(common) == 0
    printed = capsys.readouterr().out
    assert "WARNING    This model was trained on 8×8 grey handwritten digit images" in printed
    assert main([*common, "--strict"]) == 2
    assert "strict input checking is on" in capsys.readouterr().err


def decoded(data: bytes, shape=(1, 8, 8)):
    return decode_image(data, shape, max_pixels=MAX_PIXELS).description


def test_a_listed_modality_passes_and_an_unlisted_or_missing_one_is_named():
    ct = decoded(ct_slice(), (1, 28, 28))
    as_dx = ct.model_copy(update={"modality": "DX", "original_size": (28, 28)})
    assert input_fit_warnings(as_dx, CHEST) == ()
    (unlisted,) = input_fit_warnings(ct.model_copy(update={"original_size": (28, 28)}), CHEST)
    assert unlisted == (
        "This model was trained on 28×28 grey chest X-ray images of DICOM modality DX or CR; the "
        "input is a DICOM image of modality CT: its answer and radius say nothing about the CT "
        "image."
    )
    unknown = ct.model_copy(update={"modality": None, "original_size": (28, 28)})
    assert "without a readable Modality" in input_fit_warnings(unknown, CHEST)[0]


def test_a_resize_within_the_cards_factor_passes_and_beyond_it_is_named():
    assert input_fit_warnings(decoded(png_bytes((16, 16))), DIGITS) == ()
    (enlarged,) = input_fit_warnings(decoded(png_bytes((2, 2))), DIGITS)
    assert enlarged.startswith("The input (2×2) is 4× smaller than the 8×8 images")
    assert "was enlarged to 8×8" in enlarged


def test_an_aspect_ratio_change_is_named_with_its_stretch():
    (aspect,) = input_fit_warnings(decoded(png_bytes((12, 8))), DIGITS)
    assert aspect == (
        "The input's aspect ratio was changed: 12×8 was resized to the model's 8×8, stretching "
        "it 1.5× vertically, so shapes in the certified image are distorted."
    )


def test_colour_reduced_to_grey_and_grey_expanded_to_colour_are_named():
    (reduced,) = input_fit_warnings(decoded(png_bytes((8, 8), mode="RGB")), DIGITS)
    assert reduced.startswith("The input is a colour image, but this model was trained on 8×8")
    assert "colours were discarded (converted to grey)" in reduced
    grey = decoded(png_bytes((28, 28)), (3, 28, 28))
    (expanded,) = input_fit_warnings(grey, DERMA)
    assert expanded.startswith(
        "The input is a grey image, but this model was trained on 28×28 colour dermatoscopy "
        "images: its grey values were copied into three channels"
    )
    equal_channels = np.repeat(np.random.default_rng(0).random((28, 28, 1)), 3, axis=2)
    as_rgb = decode_array(equal_channels.tolist(), (3, 28, 28), max_pixels=MAX_PIXELS)
    assert as_rgb.description.colour == "grey"
    assert "its three channels are equal" in input_fit_warnings(as_rgb.description, DERMA)[0]


def test_checks_that_need_no_card_apply_to_every_model():
    blank = decode_array(np.full((8, 8), 0.25).tolist(), (1, 8, 8), max_pixels=MAX_PIXELS)
    assert input_fit_warnings(blank.description, None) == (
        "The input has the same value (0.25) at every pixel: it holds no image, and the answer "
        "means nothing.",
    )
    with open(pydicom.data.get_testdata_file("rtdose.dcm"), "rb") as file:
        volume = decoded(file.read())
    assert (volume.modality, volume.frames) == ("RTDOSE", 15)
    assert input_fit_warnings(volume, None) == (
        "The input is a DICOM with 15 frames, of which only the first was certified: the answer "
        "and radius say nothing about the other 14 frames.",
    )
    assert input_fit_warnings(decoded(png_bytes((8, 8), mode="RGB")), None)[0].startswith(
        "The input is a colour image, but this model was trained on grey images"
    )
