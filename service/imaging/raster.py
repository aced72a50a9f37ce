"""PNG and JPEG (Pillow): 8- or 16-bit samples, alpha and palettes converted to L or RGB."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.errors import ImageTooLarge, InvalidImage, TruncatedImage
from service.imaging.decoder import DecodedPixels, Reserve, check_pixels, warnings_as
from service.imaging.to_model_input import model_input_bytes

#: Bytes per pixel of Pillow's storage: one byte for 1, L and P, two for 16-bit grey, and
#: four for everything else (multi-band images are stored as 32-bit pixels).
_PIL_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}


def _has_end_marker(data: bytes, format_name: str) -> bool:
    """Whether the file ends as a complete one does: PNG's IEND chunk, JPEG's EOI marker."""
    if format_name == "png":
        return b"IEND" in data[-12:]
    return data.rstrip(b"\x00").endswith(b"\xff\xd9")


def _raster_bytes(image: Image.Image, input_shape: tuple[int, int, int]) -> int:
    """Peak bytes of decoding ``image`` (header read, pixels not): Pillow's pixels, its mode
    conversion, the NumPy copy of 8- or 16-bit samples, then :func:`model_input_bytes`."""
    width, height = image.size
    pixels = width * height
    decoded = pixels * _PIL_PIXEL_BYTES.get(image.mode, 4)
    converted = 0
    channels = 3 if image.mode == "RGB" else 1
    sample = 2 if image.mode.startswith("I;16") else 1
    if image.mode not in ("L", "RGB") and sample == 1:  # converted to L or RGB
        channels = 1 if image.mode in ("1", "LA") else 3
        converted = pixels * (1 if channels == 1 else 4)
    samples = pixels * channels * sample
    working = model_input_bytes(channels, (height, width), input_shape)
    return decoded + converted + samples + working


def decode_raster(
    data: bytes,
    format_name: str,
    max_pixels: int,
    input_shape: tuple[int, int, int],
    reserve: Reserve,
) -> DecodedPixels:
    """PNG or JPEG → ``[H, W]`` or ``[H, W, C]`` 8- or 16-bit samples (scaled to ``[0, 1]``
    by :func:`to_model_input`) and what was done."""
    label = format_name.upper()
    try:
        with warnings_as("error", Image.DecompressionBombWarning):
            image = Image.open(io.BytesIO(data), formats=[label])
            width, height = image.size
            check_pixels(height, width, max_pixels)
        # Waits for the budget outside the warning filters, which decodes take in turns.
        reserve(_raster_bytes(image, input_shape), f"the {width}×{height} {image.mode} {label}")
        with warnings_as("error", Image.DecompressionBombWarning):
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"the {label} is a decompression bomb; refused") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        if not _has_end_marker(data, format_name) or "truncated" in str(error).lower():
            raise TruncatedImage(f"the {label} file is truncated; send the whole file") from None
        if isinstance(error, UnidentifiedImageError):
            raise InvalidImage(f"the {label} file could not be decoded (corrupt header)") from None
        raise InvalidImage(f"the {label} file could not be decoded ({error})") from None

    steps = [f"decoded {label} {width}×{height} mode {image.mode}"]
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return DecodedPixels(
            np.asarray(image, dtype=np.uint16), [*steps, "scaled 16-bit by 1/65535"]
        )
    if image.mode in ("I", "F"):
        raise InvalidImage(
            f"{label} mode {image.mode} (32-bit) is not supported; send 8- or 16-bit images"
        )
    if image.mode not in ("L", "RGB"):
        has_alpha = "A" in image.mode or "transparency" in image.info
        target = "L" if image.mode in ("1", "LA", "I;16") else "RGB"
        image = image.convert(target)
        steps.append(f"converted to {target}" + (" (alpha dropped)" if has_alpha else ""))
    return DecodedPixels(np.asarray(image, dtype=np.uint8), [*steps, "scaled 8-bit by 1/255"])


def decode_png(
    data: bytes, max_pixels: int, input_shape: tuple[int, int, int], reserve: Reserve
) -> DecodedPixels:
    return decode_raster(data, "png", max_pixels, input_shape, reserve)


def decode_jpeg(
    data: bytes, max_pixels: int, input_shape: tuple[int, int, int], reserve: Reserve
) -> DecodedPixels:
    return decode_raster(data, "jpeg", max_pixels, input_shape, reserve)
