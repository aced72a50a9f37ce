"""Numeric arrays as images (JSON nested arrays and the arrays of .npy files): floats in
``[0, 1]`` as they are, 8/16-bit samples kept for :func:`to_model_input` to scale."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.image_preparation import spatial_shape
from service.errors import InvalidImage
from service.imaging.decoder import check_pixels


def scale_array(array: np.ndarray, source: str, max_pixels: int) -> tuple[np.ndarray, list[str]]:
    """A numeric array as floats in ``[0, 1]``: floats as they are, 8/16-bit ints rescaled."""
    steps = [f"read {source} array of shape {tuple(array.shape)} dtype {array.dtype}"]
    if array.ndim not in (2, 3) or array.size == 0:
        raise InvalidImage(
            f"an image array must be [H, W], [C, H, W] or [H, W, C]; got shape {array.shape}"
        )
    height, width = spatial_shape(array.shape)
    check_pixels(height, width, max_pixels)
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
