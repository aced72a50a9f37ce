"""Does the input fit what the model was made for? The decoded input held against the card.

The card's ``intended_input`` (:class:`models.card.IntendedInput`) says what the model was
trained on; the decoder records what was received (format, DICOM modality, size, channels,
colour, frames, value range) and how it was resized. Every departure becomes one sentence in
``warnings``, written to stop a careful reader; in strict mode (a request's ``strict``, or
``HYCAS_STRICT_INPUTS``) the input is refused with a 422 ``input_mismatch`` instead.

Checks that need no card apply to every model: colour discarded for a grey model, an aspect
ratio changed by resizing, a multi-frame DICOM of which one frame is certified, an image of a
single value. A card without ``intended_input`` gets only those.
"""

from __future__ import annotations

import dataclasses
import math

from models.card import IntendedInput
from service.errors import InputMismatch
from service.imaging import DecodedImage, InputDescription
from workers.model_cache import LoadedModel

ASPECT_TOLERANCE = 1.05
"""The largest stretch of one axis against the other that still counts as the same shape."""
UNIFORM_SPREAD = 1 / 255
"""An image whose values all lie within one 8-bit grey level holds no picture."""


def intended_input(loaded: LoadedModel) -> IntendedInput | None:
    """The card's intended input (validated when the card was read), ``None`` if it has none."""
    declared = loaded.card.get("intended_input")
    return None if declared is None else IntendedInput.from_dict(declared)


def _size(height: int, width: int) -> str:
    return f"{width}×{height}"


def _factor(ratio: float) -> str:
    larger = ratio >= 1
    return f"{(ratio if larger else 1 / ratio):.3g}× {'larger' if larger else 'smaller'}"


def _trained_on(intended: IntendedInput) -> str:
    colour = "colour" if intended.colour == "rgb" else "grey"
    return f"{_size(*intended.native_size)} {colour} {intended.kind} images"


def _modality_warning(description: InputDescription, intended: IntendedInput) -> str | None:
    if description.format != "dicom":
        return None
    modality = description.modality
    if modality is not None and modality in intended.modalities:
        return None
    received = (
        f"a DICOM image of modality {modality}"
        if modality
        else "a DICOM image without a readable Modality"
    )
    about = f"the {modality} image" if modality else "it"
    if not intended.modalities:
        return (
            f"This model was trained on {_trained_on(intended)}, not on DICOM images; the input "
            f"is {received}: its answer and radius say nothing about {about}."
        )
    return (
        f"This model was trained on {_trained_on(intended)} of DICOM modality "
        f"{' or '.join(intended.modalities)}; the input is {received}: its answer and radius "
        f"say nothing about {about}."
    )


def _resize_warning(description: InputDescription, intended: IntendedInput) -> str | None:
    if description.original_size is None or description.resize_factor is None:
        return None
    height, width = description.original_size
    native_height, native_width = intended.native_size
    ratios = (height / native_height, width / native_width)
    if max(max(r, 1 / r) for r in ratios) <= intended.max_resize_factor * (1 + 1e-9):
        return None
    if math.isclose(*ratios, rel_tol=0.01):
        scale = _factor(ratios[1])
    else:
        scale = f"{_factor(ratios[1])} in width and {_factor(ratios[0])} in height"
    factors = description.resize_factor
    verb = "shrunk" if min(factors) >= 1 else "enlarged" if max(factors) <= 1 else "resized"
    return (
        f"The input ({_size(height, width)}) is {scale} than the "
        f"{_size(native_height, native_width)} images this model was trained on (its card "
        f"accepts at most {intended.max_resize_factor:g}×) and was {verb} to "
        f"{_size(*description.shape[1:])}: the answer and radius are about the {verb} image, "
        "not the one sent."
    )


def _aspect_warning(description: InputDescription) -> str | None:
    if description.original_size is None or description.resize_factor is None:
        return None
    height_factor, width_factor = description.resize_factor
    stretch = height_factor / width_factor  # > 1: widened against the height
    if max(stretch, 1 / stretch) <= ASPECT_TOLERANCE:
        return None
    direction = "horizontally" if stretch > 1 else "vertically"
    return (
        f"The input's aspect ratio was changed: {_size(*description.original_size)} was resized "
        f"to the model's {_size(*description.shape[1:])}, stretching it "
        f"{max(stretch, 1 / stretch):.3g}× {direction}, so shapes in the certified image are "
        "distorted."
    )


def _colour_warning(description: InputDescription, intended: IntendedInput | None) -> str | None:
    if description.colour == "rgb" and description.shape[0] == 1:
        trained = "grey images" if intended is None else _trained_on(intended)
        return (
            f"The input is a colour image, but this model was trained on {trained}: its "
            "colours were discarded (converted to grey) before certification, and the answer "
            "says nothing about them."
        )
    if description.colour == "grey" and intended is not None and intended.colour == "rgb":
        how = (
            "its grey values were copied into three channels"
            if description.original_channels == 1
            else "its three channels are equal"
        )
        return (
            f"The input is a grey image, but this model was trained on {_trained_on(intended)}: "
            f"{how}, and the answer is about an image unlike any it was trained on."
        )
    return None


def _content_warnings(description: InputDescription) -> list[str]:
    found = []
    if description.frames > 1:
        others = "frame" if description.frames == 2 else f"{description.frames - 1} frames"
        found.append(
            f"The input is a DICOM with {description.frames} frames, of which only the first "
            f"was certified: the answer and radius say nothing about the other {others}."
        )
    if description.value_range is not None:
        low, high = description.value_range
        if high - low < UNIFORM_SPREAD:
            found.append(
                f"The input has the same value ({low:.3g}) at every pixel: it holds no image, "
                "and the answer means nothing."
            )
    return found


def input_fit_warnings(
    description: InputDescription, intended: IntendedInput | None
) -> tuple[str, ...]:
    """Every way ``description`` departs from ``intended`` (and from any image a model can
    answer for), each as a sentence; empty when the input fits."""
    found = []
    if intended is not None:
        found += [_modality_warning(description, intended), _resize_warning(description, intended)]
    found += [_aspect_warning(description), _colour_warning(description, intended)]
    return tuple(w for w in found if w is not None) + tuple(_content_warnings(description))


def check_input_fit(decoded: DecodedImage, loaded: LoadedModel, *, strict: bool) -> DecodedImage:
    """``decoded`` with its warnings recorded in its description; with ``strict``, an input
    that has any is refused (:class:`InputMismatch`, 422) with the sentences as the message."""
    warnings = input_fit_warnings(decoded.description, intended_input(loaded))
    if warnings and strict:
        raise InputMismatch(
            f"the input does not fit what {loaded.model_id} v{loaded.version} was made for, and "
            f"strict input checking is on: {' '.join(warnings)}"
        )
    description = decoded.description.model_copy(update={"warnings": warnings})
    return dataclasses.replace(decoded, description=description)
