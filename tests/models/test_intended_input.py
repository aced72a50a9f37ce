"""The card's ``intended_input``: what a model was made for, validated with clear errors."""

from __future__ import annotations

import json

import pytest

import models
from models.card import IntendedInput, ModelCard
from models.data import intended_input_of, load_dataset

DIGITS = {"kind": "handwritten digit", "channels": 1, "native_size": [8, 8], "modalities": []}


def shipped_card_json() -> dict:
    card = models.repository.SHIPPED_REPOSITORY / "digits-hycas" / "1" / "model.json"
    return json.loads(card.read_text())


def test_the_shipped_card_declares_handwritten_digits_and_no_dicom():
    intended = models.read_card("digits-hycas").intended_input
    assert intended == IntendedInput("handwritten digit", 1, (8, 8), "grey", (), 2.0)


def test_intended_input_round_trips_and_colour_follows_the_channels():
    intended = IntendedInput.from_dict(DIGITS)
    assert intended.colour == "grey" and intended.max_resize_factor == 2.0
    data = shipped_card_json()
    card = ModelCard.from_dict(data)
    assert ModelCard.from_dict(json.loads(card.to_json())) == card
    assert IntendedInput.from_dict({**DIGITS, "channels": 3}).colour == "rgb"


def test_a_card_without_intended_input_still_loads():
    data = shipped_card_json()
    del data["intended_input"]
    assert ModelCard.from_dict(data).intended_input is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": " "}, "kind must be a non-empty text"),
        ({"channels": 2}, "channels must be 1 or 3"),
        ({"native_size": [8]}, r"native_size must be \[H, W\]"),
        ({"native_size": [8, 0]}, r"native_size must be \[H, W\]"),
        ({"colour": "rgb"}, "colour 'rgb' needs 3 channels"),
        ({"colour": "sepia"}, "colour must be one of"),
        ({"modalities": ["ct"]}, "DICOM Modality codes"),
        ({"modalities": "CT"}, "DICOM Modality codes"),
        ({"max_resize_factor": 0.5}, "max_resize_factor must be a number ≥ 1"),
        ({"max_resize_factor": float("inf")}, "max_resize_factor must be a number ≥ 1"),
        ({"size": [8, 8]}, r"unknown field\(s\) \['size'\]"),
    ],
)
def test_a_wrong_intended_input_is_refused_naming_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        IntendedInput.from_dict({**DIGITS, **change})


def test_intended_channels_must_be_the_models():
    data = shipped_card_json()
    data["intended_input"] = {**DIGITS, "channels": 3}
    with pytest.raises(ValueError, match=r"intended_input\.channels is 3, but the model takes 1"):
        ModelCard.from_dict(data)


def test_training_defaults_name_the_kind_and_modalities_of_each_dataset():
    digits = load_dataset("digits", "test")
    assert intended_input_of("digits", digits) == IntendedInput(
        "handwritten digit", 1, (8, 8), "grey", ()
    )
    chest = intended_input_of("pneumoniamnist", digits)
    assert chest.kind == "paediatric chest X-ray" and chest.modalities == ("DX", "CR")
    assert intended_input_of("chestmnist", digits).modalities == ("DX",)
    assert intended_input_of("image-folder", digits, "/data/lesions").kind == (
        "'lesions' image-folder"
    )
