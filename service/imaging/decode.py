"""An upload or a JSON array in, the model's input and the record of how it was made out."""

from __future__ import annotations

import hashlib
import math
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.image_preparation import spatial_shape
from service.decode_budget import DecodeBudget
from service.errors import InvalidImage
from service.imaging.arrays import array_from_json, channel_count, check_image_shape
from service.imaging.description import InputDescription
from service.imaging.facts import received_facts
from service.imaging.formats import DECODERS
from service.imaging.sniff import sniff_format
from service.imaging.to_model_input import model_input_bytes, to_model_input


@dataclass(frozen=True)
class DecodedImage:
    """The model's input and the record of how it was obtained (no pixel data in the record)."""

    tensor: np.ndarray
    """float32 ``[C, H, W]`` with values in ``[0, 1]`` at the model's input shape."""
    description: InputDescription


def _describe(
    tensor: np.ndarray,
    format_name: str,
    original_shape: tuple[int, ...],
    received_sha256: str,
    steps: list[str],
    received: dict[str, Any],
) -> DecodedImage:
    tensor = np.ascontiguousarray(tensor)
    height, width = received["original_size"]
    return DecodedImage(
        tensor=tensor,
        description=InputDescription(
            format=format_name,
            original_shape=original_shape,
            shape=tuple(int(d) for d in tensor.shape),  # type: ignore[arg-type]
            transforms=tuple(steps),
            sha256=received_sha256,
            tensor_sha256=hashlib.sha256(tensor.tobytes()).hexdigest(),
            resize_factor=(height / tensor.shape[1], width / tensor.shape[2]),
            **received,
        ),
    )


def decode_image(
    data: bytes,
    input_shape: tuple[int, int, int],
    *,
    max_pixels: int,
    budget: DecodeBudget | None = None,
) -> DecodedImage:
    """Decode an uploaded file to the model's input; refusals are 4xx :class:`ServiceError`.

    With a ``budget``, the decode holds its share of it (estimated from the header, before
    any pixel is decoded) until the model's input is made, and is refused (413) when it
    needs more than the whole budget."""
    format_name = sniff_format(data)
    with ExitStack() as held:

        def reserve(nbytes: int, what: str) -> None:
            if budget is not None:
                held.enter_context(budget.reserve(nbytes, what))

        pixels = DECODERS[format_name](data, max_pixels, input_shape, reserve)
        values = pixels.values
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise InvalidImage(
                "the image has NaN or infinite values after decoding (check the DICOM rescale "
                "and window values)"
            )
        original_shape = tuple(int(d) for d in values.shape)
        facts = received_facts(values, modality=pixels.modality, frames=pixels.frames)
        tensor, steps = to_model_input(values, input_shape, pixels.steps)
        del values, pixels
    received = hashlib.sha256(data).hexdigest()
    return _describe(tensor, format_name, original_shape, received, steps, facts)


def _nested_shape(nested: Any) -> tuple[int, ...]:
    """The shape a nested list declares along its first elements (ragged ones are refused
    when converted)."""
    shape = []
    while isinstance(nested, list) and len(shape) < 3:
        shape.append(len(nested))
        nested = nested[0] if nested else None
    return tuple(shape)


def decode_array(
    nested: Any,
    input_shape: tuple[int, int, int],
    *,
    max_pixels: int,
    budget: DecodeBudget | None = None,
) -> DecodedImage:
    """A JSON nested array to the model's input (its hash is over the canonical float64 bytes).

    With a ``budget``, the conversion holds its share (three float64 copies of the array's
    declared size, then :func:`to_model_input`'s), as :func:`decode_image` does."""
    # The shape its first elements declare (a ragged array, which does not have it, is
    # refused by array_from_json): refused here before NumPy copies the lists.
    shape = _nested_shape(nested)
    check_image_shape(shape, max_pixels)
    with ExitStack() as held:
        if budget is not None:
            needed = 3 * 8 * math.prod(shape)
            needed += model_input_bytes(channel_count(shape), spatial_shape(shape), input_shape)
            held.enter_context(budget.reserve(needed, f"the {'×'.join(map(str, shape))} array"))
        values, steps = array_from_json(nested, max_pixels)
        original_shape = tuple(int(d) for d in values.shape)
        received = hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()
        facts = received_facts(values)
        tensor, steps = to_model_input(values, input_shape, steps)
        del values
    return _describe(tensor, "array", original_shape, received, steps, facts)
