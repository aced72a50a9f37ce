"""Numeric arrays as images (JSON nested arrays and the arrays of .npy files): floats in
``[0, 1]`` as they are, 8/16-bit samples kept for :func:`to_model_input` to scale."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.image_preparation import spatial_shape
from service.errors import InvalidImage
from service.imaging.decoder import check_pixels


def check_image_shape(shape: tuple[int, ...], max_pixels: int) -> tuple[int, int]:
    """``(H, W)`` of an array shape that can be an image (``[H, W]``, ``[C, H, W]`` or
    ``[H, W, C]``, no empty axis, at most ``max_pixels`` pixels); :class:`InvalidImage` or
    :class:`ImageTooLarge` before any pixel is read otherwise."""
    if (
        len(shape) not in (2, 3)
        or not all(type(d) is int for d in shape)  # a header may declare (True, 8) or (8.0, 8)
        or min(shape) < 1
    ):
        raise InvalidImage(
            "an image array must be [H, W], [C, H, W] or [H, W, C] with no empty axis; got "
            f"shape {tuple(shape)}"
        )
    height, width = spatial_shape(shape)
    check_pixels(height, width, max_pixels)
    return height, width


def channel_count(shape: tuple[int, ...]) -> int:
    """Channels of a shape :func:`check_image_shape` accepted."""
    return 1 if len(shape) == 2 else math.prod(shape) // math.prod(spatial_shape(shape))


def scale_array(array: np.ndarray, source: str, max_pixels: int) -> tuple[np.ndarray, list[str]]:
    """A numeric array as floats in ``[0, 1]``: floats as they are, 8/16-bit ints rescaled."""
    steps = [f"read {source} array of shape {tuple(array.shape)} dtype {array.dtype}"]
    check_image_shape(tuple(int(d) for d in array.shape), max_pixels)
    if array.dtype.kind in "uif" and not array.dtype.isnative:  # e.g. a big-endian ">u2"
        array = array.astype(array.dtype.newbyteorder("="))
        steps.append(f"converted to this machine's byte order ({array.dtype})")
    if array.dtype == np.uint8:  # scaled by to_model_input, a strip at a time
        return array, [*steps, "scaled uint8 by 1/255"]
    if array.dtype == np.uint16:
        return array, [*steps, "scaled uint16 by 1/65535"]
    if array.dtype == np.bool_:
        return array.astype(np.float64), steps
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidImage(
            f"array dtype {array.dtype} is not supported; send floats in [0, 1], uint8 or uint16"
        )
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise InvalidImage("the array contains NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        raise InvalidImage(
            f"float arrays must have values in [0, 1]; got values in [{low:.6g}, {high:.6g}]"
        )
    return values, steps


def array_from_json(nested: Any, max_pixels: int) -> tuple[np.ndarray, list[str]]:
    """A JSON nested list of numbers in ``[0, 1]`` (``[H, W]``, ``[C, H, W]`` or ``[H, W, C]``)."""
    message = "image must be a rectangular nested array of numbers ([H, W], [C, H, W] or [H, W, C])"
    try:
        array = np.asarray(nested)
    except (TypeError, ValueError, OverflowError):
        raise InvalidImage(message) from None
    if array.dtype.kind not in "iuf":  # strings, booleans, nulls and objects are not pixels
        raise InvalidImage(message)
    try:
        array = array.astype(np.float64)
    except OverflowError:
        raise InvalidImage(message) from None
    return scale_array(array, "JSON", max_pixels)
