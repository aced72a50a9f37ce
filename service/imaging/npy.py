""".npy files (NumPy's format, never pickles): the header checked before the array is read."""

from __future__ import annotations

import io
import math

import numpy as np

from models.image_preparation import spatial_shape
from service.errors import InvalidImage, TruncatedImage
from service.imaging.arrays import scale_array
from service.imaging.decoder import DecodedPixels, Reserve, check_pixels
from service.imaging.to_model_input import model_input_bytes

_SCALED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


def _check_npy_header(data: bytes, max_pixels: int) -> tuple[tuple[int, ...], np.dtype]:
    """Refuse an ``.npy`` whose header declares an image too large or more data than was
    sent, before NumPy allocates the array the header declares; its shape and dtype."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise InvalidImage(f".npy format version {version} is not supported; use 1.0 or 2.0")
    except (ValueError, EOFError, OSError) as error:
        raise TruncatedImage(f"the .npy file is truncated or corrupt ({error})") from None
    if dtype.hasobject:
        raise InvalidImage("object arrays (pickled .npy) are refused")
    if len(shape) not in (2, 3):
        raise InvalidImage(
            f"an image array must be [H, W], [C, H, W] or [H, W, C]; got shape {shape}"
        )
    height, width = spatial_shape(shape)
    check_pixels(height, width, max_pixels)
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > len(data) - stream.tell():
        raise TruncatedImage(
            f"the .npy file is truncated: its header declares {declared:,} bytes of data, "
            f"{len(data) - stream.tell():,} were sent"
        )
    return shape, dtype


def decode_npy(
    data: bytes, max_pixels: int, input_shape: tuple[int, int, int], reserve: Reserve
) -> DecodedPixels:
    shape, dtype = _check_npy_header(data, max_pixels)
    samples = int(np.prod(shape))
    as_float = 0 if dtype in _SCALED_DTYPES else 8 * samples
    channels = 1 if len(shape) == 2 else samples // math.prod(spatial_shape(shape))
    working = model_input_bytes(channels, spatial_shape(shape), input_shape)
    reserve(samples * dtype.itemsize + as_float + working, f"the {'×'.join(map(str, shape))} .npy")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise InvalidImage("object arrays (pickled .npy) are refused") from None
        raise TruncatedImage(f"the .npy file is truncated or corrupt ({error})") from None
    except (EOFError, OSError) as error:
        raise TruncatedImage(f"the .npy file is truncated or corrupt ({error})") from None
    return DecodedPixels(*scale_array(array, "npy", max_pixels))
