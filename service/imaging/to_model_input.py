"""The service's one way from decoded samples to the model's input, and what it costs.

:func:`to_model_input` is :func:`models.image_preparation.prepare_image`, the preparation that
training and evaluation use too, with its refusals as 422s; :func:`model_input_bytes` is
its peak memory, which decoders reserve from the decode budget before they allocate pixels.
"""

from __future__ import annotations

import numpy as np

from models.image_preparation import ImageLayoutError, prepare_image, shrinks, strip_rows
from service.errors import InvalidImage


def model_input_bytes(
    channels: int, size: tuple[int, int], input_shape: tuple[int, int, int]
) -> int:
    """Peak bytes of :func:`to_model_input` for ``channels`` planes of ``size`` (float64
    work arrays: a strip of rows at a time when the image shrinks, else the whole image)."""
    height, width = size
    planes = max(channels, input_shape[0])
    out_pixels = input_shape[1] * input_shape[2]
    if shrinks(size, input_shape):
        strip = planes * min(height, strip_rows(channels, width)) * width
        return 8 * (3 * strip + 2 * planes * height * input_shape[2] + 2 * planes * out_pixels)
    return 8 * 3 * planes * max(height * width, out_pixels)


def to_model_input(
    values: np.ndarray, input_shape: tuple[int, int, int], steps: list[str]
) -> tuple[np.ndarray, list[str]]:
    """Decoded samples → float32 ``[C, H, W]`` of the model in ``[0, 1]``; ``steps`` followed
    by the preparation's own."""
    try:
        tensor, prepared = prepare_image(values, input_shape)
    except ImageLayoutError as error:
        raise InvalidImage(str(error)) from None
    return tensor, [*steps, *prepared]
