"""The one preparation of an image for a model: samples → the model's channels → its size.

Training, evaluation and serving all call :func:`prepare_image`, so the same file gives the
model the same float32 ``[C, H, W]`` tensor everywhere. It lives in ``models`` (torch and
NumPy only) because the dataset loaders may not import the service; the service's decoders
(:mod:`service.imaging`) read the file, then hand their samples here. It sits beside the
packages of ``models``, not inside ``models.data``, so that the gateway and the workers import
it without the dataset loaders (scikit-learn, Pillow).

The numerics are the service's, which certified radii were measured with: 8/16-bit samples
divided by 255 or 65535 in float64; RGB to grey by ITU-R BT.601 luma
(0.299 R + 0.587 G + 0.114 B); grey to RGB by replication; a bilinear resize
(``torch.nn.functional.interpolate``, ``align_corners=False``), antialiased when the image
shrinks along either axis; values clipped to ``[0, 1]``; the aspect ratio is not kept.
"""

from __future__ import annotations

import numpy as np
import torch

#: Samples converted to float64 at a time when an image is shrunk (one strip of rows).
STRIP_SAMPLES = 1 << 20
_UNIT_DIVISORS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_BT601_LUMA = (0.299, 0.587, 0.114)


class ImageLayoutError(ValueError):
    """An array that no model input can be made of (its message says why)."""


def unit_divisor(values: np.ndarray) -> float:
    """What integer samples are divided by to lie in ``[0, 1]`` (8 or 16 bits); floats: 1."""
    return _UNIT_DIVISORS.get(values.dtype, 1.0)


def channels_last(shape: tuple[int, ...]) -> bool:
    """Whether a 3-D image array is ``[H, W, C]``: a channel count last and not first."""
    return len(shape) == 3 and shape[0] not in (1, 3, 4) and shape[-1] in (1, 3, 4)


def spatial_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(H, W)`` of an ``[H, W]``, ``[C, H, W]`` or ``[H, W, C]`` array."""
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    if channels_last(shape):
        return int(shape[0]), int(shape[1])
    return int(shape[1]), int(shape[2])


def shrinks(size: tuple[int, int], input_shape: tuple[int, int, int]) -> bool:
    """Whether an image of ``size`` ``(H, W)`` is made smaller along either axis."""
    return size[0] > input_shape[1] or size[1] > input_shape[2]


def strip_rows(channels: int, width: int) -> int:
    """Rows of one strip of a shrinking image: about :data:`STRIP_SAMPLES` samples."""
    return max(1, STRIP_SAMPLES // (channels * width))


def _resize(planes: np.ndarray, size: tuple[int, int], antialias: bool) -> np.ndarray:
    tensor = torch.from_numpy(planes).unsqueeze(0)
    resized = torch.nn.functional.interpolate(
        tensor, size=size, mode="bilinear", align_corners=False, antialias=antialias
    )
    return resized.squeeze(0).numpy()


def prepare_image(
    values: np.ndarray, input_shape: tuple[int, int, int]
) -> tuple[np.ndarray, list[str]]:
    """``[H, W]``, ``[C, H, W]`` or ``[H, W, C]`` floats in ``[0, 1]`` (or 8/16-bit samples,
    scaled here) → float32 ``[C, H, W]`` of ``input_shape``, and the steps taken.

    An image that shrinks is converted and resized a strip of rows at a time: the
    antialiased bilinear resize is separable, and torch resizes along the width first, so
    resizing each strip's width and then the stacked strips' height gives torch's own result
    without a float64 copy of the whole image. Raises :class:`ImageLayoutError` for an array
    with a channel count no model input can be made of."""
    channels, height, width = input_shape
    steps: list[str] = []
    if values.ndim == 2:
        values = values[np.newaxis]
    elif channels_last(values.shape):
        values = np.moveaxis(values, -1, 0)
        steps.append("moved channels first")
    if values.shape[0] == 4:
        values = values[:3]
        steps.append("dropped the 4th (alpha) channel")
    if values.shape[0] not in (1, 3):
        raise ImageLayoutError(f"an image needs 1, 3 or 4 channels; got shape {values.shape}")
    divisor = unit_divisor(values)
    if values.shape[0] == 3 and channels == 1:
        mix = "luma"
        steps.append("converted RGB to grayscale (ITU-R BT.601 luma)")
    elif values.shape[0] == 1 and channels == 3:
        mix = "replicate"
        steps.append("replicated grayscale to 3 channels")
    elif values.shape[0] != channels:
        raise ImageLayoutError(
            f"the model takes {channels} channels; the image has {values.shape[0]}"
        )
    else:
        mix = None

    def model_planes(block: np.ndarray) -> np.ndarray:
        """Rows of the image as float64 planes in [0, 1] with the model's channels."""
        block = np.array(block, dtype=np.float64)
        if divisor != 1.0:
            block /= divisor
        if mix == "luma":
            return np.tensordot(np.array(_BT601_LUMA), block, axes=1)[np.newaxis]
        if mix == "replicate":
            return np.repeat(block, 3, axis=0)
        return block

    size = (int(values.shape[1]), int(values.shape[2]))
    if size == (height, width):
        planes = model_planes(values)
    else:
        antialias = shrinks(size, input_shape)
        if antialias:
            rows = strip_rows(values.shape[0], size[1])
            widths_resized = np.concatenate(
                [
                    _resize(
                        model_planes(values[:, top : top + rows]),
                        (min(rows, size[0] - top), width),
                        True,
                    )
                    for top in range(0, size[0], rows)
                ],
                axis=1,
            )
            planes = _resize(widths_resized, (height, width), True)
        else:
            planes = _resize(model_planes(values), (height, width), False)
        steps.append(
            f"resized {size[1]}×{size[0]} to {width}×{height} (bilinear"
            f"{', antialiased' if antialias else ''}; aspect ratio not kept)"
        )
    return np.clip(planes, 0.0, 1.0).astype(np.float32), steps
