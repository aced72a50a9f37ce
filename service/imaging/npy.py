""".npy files (NumPy's format, never pickles): the header checked before the array is read."""

from __future__ import annotations

import io
import math
import tokenize

import numpy as np

from models.image_preparation import spatial_shape
from service.errors import InvalidImage, TruncatedImage
from service.imaging.arrays import channel_count, check_image_shape, scale_array
from service.imaging.decoder import DecodedPixels, Reserve
from service.imaging.to_model_input import model_input_bytes

_SCALED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


def _check_npy_header(data: bytes, max_pixels: int) -> tuple[tuple[int, ...], np.dtype]:
    """Refuse an ``.npy`` whose header is not valid, declares no image or one too large, or
    more data than was sent, before NumPy allocates the array the header declares; its shape
    and dtype."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise InvalidImage(f".npy format version {version} is not supported; use 1.0 or 2.0")
    except (EOFError, OSError) as error:
        raise TruncatedImage(f"the .npy file is truncated ({error})") from None
    except (ValueError, SyntaxError, TypeError, tokenize.TokenError) as error:
        # NumPy reports a header cut short as "EOF: reading ..." and a malformed one otherwise.
        if str(error).startswith("EOF"):
            raise TruncatedImage(f"the .npy file is truncated ({error})") from None
        raise InvalidImage(f"the .npy header is not valid ({error})") from None
    if dtype.hasobject:
        raise InvalidImage("object arrays (pickled .npy) are refused")
    check_image_shape(shape, max_pixels)
    declared = math.prod(shape) * dtype.itemsize
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
    samples = math.prod(shape)
    as_float = 0 if dtype in _SCALED_DTYPES else 8 * samples
    working = model_input_bytes(channel_count(shape), spatial_shape(shape), input_shape)
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
