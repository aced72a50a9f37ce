"""What the received image was before it became the model's input: the facts that
:mod:`service.input_fit` holds against the model card."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.image_preparation import channels_last, spatial_shape, unit_divisor

#: Mean difference between colour channels above which an image carries colour (JPEG's
#: chroma noise on a grey picture stays below it).
COLOUR_TOLERANCE = 2 / 255
_COLOUR_SAMPLE_PIXELS = 1 << 16


def received_facts(
    values: np.ndarray, *, modality: str | None = None, frames: int = 1
) -> dict[str, Any]:
    """What the received image was before it became the model's input: the facts that
    :mod:`service.input_fit` holds against the model card. The colour test reads a strided
    sample of at most about 65,536 pixels."""
    height, width = spatial_shape(values.shape)
    planes = values[np.newaxis] if values.ndim == 2 else values
    if channels_last(values.shape):
        planes = np.moveaxis(values, -1, 0)
    colour = "grey"
    divisor = unit_divisor(values)  # 8/16-bit samples are scaled to [0, 1] later
    if planes.shape[0] >= 3:
        step = max(1, int(np.sqrt(height * width / _COLOUR_SAMPLE_PIXELS)))
        red, green, blue = planes[:3, ::step, ::step].astype(np.float64) / divisor
        spread = float(np.mean(np.abs(red - green) + np.abs(green - blue))) / 2
        colour = "rgb" if spread > COLOUR_TOLERANCE else "grey"
    return {
        "modality": modality,
        "frames": frames,
        "original_size": (height, width),
        "original_channels": int(planes.shape[0]),
        "colour": colour,
        "value_range": (float(values.min()) / divisor, float(values.max()) / divisor),
    }
