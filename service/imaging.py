"""Bytes or arrays in, the model's input out: a float32 ``[C, H, W]`` tensor in ``[0, 1]``.

Accepted: PNG and JPEG (Pillow), ``.npy`` (NumPy, no pickle), DICOM (pydicom) and nested
arrays from JSON. The format is recognised from the content, not from the file name. Every
step is recorded in :class:`DecodedImage.transforms`, and the certified radius lives in the
returned tensor's space. Decoding never logs and never copies pixel values or DICOM header
values (patient tags) into messages.

DICOM: the first frame of a multi-frame object; the modality LUT or rescale slope/intercept;
the first VOI window when the file has a valid one (PS3.3 C.11.2.1.2), else the first VOI
LUT of its VOI LUT Sequence, else the frame's own value range; MONOCHROME1 inverted so that
bright means high; colour converted to RGB by pydicom.
Compressed transfer syntaxes need codecs (the ``dicom`` extra); a missing one is a 415. A
deflated data set is inflated in bounded chunks and refused when it grows past what the pixel
limit allows, before pydicom inflates it whole.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pydicom
import pydicom.errors
import torch
from PIL import Image, UnidentifiedImageError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import DeflatedExplicitVRLittleEndian

from models.card import MODALITY_CODE
from service.decode_budget import DecodeBudget
from service.errors import (
    ImageTooLarge,
    InvalidImage,
    MissingDICOMCodec,
    NotAnImage,
    ServiceError,
    TruncatedImage,
    UnsupportedMediaType,
)
from workers.certification import InputDescription

# pydicom's own warnings and log records can quote element values (patient names among them):
# its records stop at its own logger and never reach the service's handlers.
logging.getLogger("pydicom").setLevel(logging.ERROR)
logging.getLogger("pydicom").propagate = False

DICOM_CODECS_HINT = "install the optional codecs: pip install 'hycas-certify[dicom]'"

_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"\x93NUMPY": "npy",
}
_UNSUPPORTED_MAGIC = {
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"\x00\x00\x00\x0cjP  ": "JPEG 2000",
    b"%PDF": "PDF",
}


@dataclass(frozen=True)
class DecodedImage:
    """The model's input and the record of how it was obtained (no pixel data in the record)."""

    tensor: np.ndarray
    """float32 ``[C, H, W]`` with values in ``[0, 1]`` at the model's input shape."""
    description: InputDescription


def sniff_format(data: bytes) -> str:
    """``png``, ``jpeg``, ``npy`` or ``dicom`` from the leading bytes; refuse anything else."""
    if len(data) == 0:
        raise NotAnImage("the file is empty")
    for magic, name in _MAGIC.items():
        if data.startswith(magic):
            return name
    if data[128:132] == b"DICM":
        return "dicom"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        raise UnsupportedMediaType("WebP images are not supported; send PNG, JPEG, NPY or DICOM")
    for magic, name in _UNSUPPORTED_MAGIC.items():
        if data.startswith(magic):
            raise UnsupportedMediaType(
                f"{name} files are not supported; send PNG, JPEG, NPY or DICOM (Part 10, with "
                "the 'DICM' preamble)"
            )
    raise NotAnImage(
        "the file is not a PNG, JPEG, NPY or DICOM image (its first bytes match none of them)"
    )


_WARNING_FILTERS = threading.Lock()


@contextmanager
def _warnings_as(
    action: Literal["error", "ignore"], category: type[Warning] = Warning
) -> Iterator[None]:
    """Warnings of ``category`` turned into ``action`` while decoding (pydicom's warnings may
    quote header values; Pillow's bomb warning becomes an error). The warning filters are
    process-wide and ``catch_warnings`` is not thread-safe, so decodes that change them take
    turns; otherwise two overlapping ones could restore each other's filters."""
    with _WARNING_FILTERS, warnings.catch_warnings():
        warnings.simplefilter(action, category)
        yield


def _check_pixels(height: int, width: int, max_pixels: int) -> None:
    if height * width > max_pixels:
        raise ImageTooLarge(
            f"image is {width}×{height} ({height * width:,} pixels); the limit is "
            f"{max_pixels:,} pixels"
        )


Reserve = Callable[[int, str], None]
"""Called by a decoder once it read its header and before it allocates pixels:
``reserve(bytes it will hold at once, what the image is)``; it may wait or refuse (413)."""

#: Bytes per pixel of Pillow's storage: one byte for 1, L and P, two for 16-bit grey, and
#: four for everything else (multi-band images are stored as 32-bit pixels).
_PIL_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}
#: Samples converted to float64 at a time when an image is shrunk (one strip of rows).
STRIP_SAMPLES = 1 << 20
_UNIT_DIVISORS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def _unit_divisor(values: np.ndarray) -> float:
    """What integer samples are divided by to lie in ``[0, 1]`` (8 or 16 bits); floats: 1."""
    return _UNIT_DIVISORS.get(values.dtype, 1.0)


def _shrinks(size: tuple[int, int], input_shape: tuple[int, int, int]) -> bool:
    return size[0] > input_shape[1] or size[1] > input_shape[2]


def _strip_rows(channels: int, width: int) -> int:
    return max(1, STRIP_SAMPLES // (channels * width))


def _model_input_bytes(
    channels: int, size: tuple[int, int], input_shape: tuple[int, int, int]
) -> int:
    """Peak bytes of :func:`_to_model_input` for ``channels`` planes of ``size`` (float64
    work arrays: a strip of rows at a time when the image shrinks, else the whole image)."""
    height, width = size
    planes = max(channels, input_shape[0])
    out_pixels = input_shape[1] * input_shape[2]
    if _shrinks(size, input_shape):
        strip = planes * min(height, _strip_rows(channels, width)) * width
        return 8 * (3 * strip + 2 * planes * height * input_shape[2] + 2 * planes * out_pixels)
    return 8 * 3 * planes * max(height * width, out_pixels)


def _has_end_marker(data: bytes, format_name: str) -> bool:
    """Whether the file ends as a complete one does: PNG's IEND chunk, JPEG's EOI marker."""
    if format_name == "png":
        return b"IEND" in data[-12:]
    return data.rstrip(b"\x00").endswith(b"\xff\xd9")


def _raster_bytes(image: Image.Image, input_shape: tuple[int, int, int]) -> int:
    """Peak bytes of decoding ``image`` (header read, pixels not): Pillow's pixels, its mode
    conversion, the NumPy copy of 8- or 16-bit samples, then :func:`_model_input_bytes`."""
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
    working = _model_input_bytes(channels, (height, width), input_shape)
    return decoded + converted + samples + working


def _decode_raster(
    data: bytes,
    format_name: str,
    max_pixels: int,
    input_shape: tuple[int, int, int],
    reserve: Reserve,
) -> tuple[np.ndarray, list[str]]:
    """PNG or JPEG → ``[H, W]`` or ``[H, W, C]`` 8- or 16-bit samples (scaled to ``[0, 1]``
    by :func:`_to_model_input`) and what was done."""
    label = format_name.upper()
    try:
        with _warnings_as("error", Image.DecompressionBombWarning):
            image = Image.open(io.BytesIO(data), formats=[label])
            width, height = image.size
            _check_pixels(height, width, max_pixels)
        # Waits for the budget outside the warning filters, which decodes take in turns.
        reserve(_raster_bytes(image, input_shape), f"the {width}×{height} {image.mode} {label}")
        with _warnings_as("error", Image.DecompressionBombWarning):
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
        return np.asarray(image, dtype=np.uint16), [*steps, "scaled 16-bit by 1/65535"]
    if image.mode in ("I", "F"):
        raise InvalidImage(
            f"{label} mode {image.mode} (32-bit) is not supported; send 8- or 16-bit images"
        )
    if image.mode not in ("L", "RGB"):
        has_alpha = "A" in image.mode or "transparency" in image.info
        target = "L" if image.mode in ("1", "LA", "I;16") else "RGB"
        image = image.convert(target)
        steps.append(f"converted to {target}" + (" (alpha dropped)" if has_alpha else ""))
    return np.asarray(image, dtype=np.uint8), [*steps, "scaled 8-bit by 1/255"]


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
    height, width = _spatial_shape(shape)
    _check_pixels(height, width, max_pixels)
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > len(data) - stream.tell():
        raise TruncatedImage(
            f"the .npy file is truncated: its header declares {declared:,} bytes of data, "
            f"{len(data) - stream.tell():,} were sent"
        )
    return shape, dtype


def _decode_npy(
    data: bytes, max_pixels: int, input_shape: tuple[int, int, int], reserve: Reserve
) -> tuple[np.ndarray, list[str]]:
    shape, dtype = _check_npy_header(data, max_pixels)
    samples = int(np.prod(shape))
    as_float = 0 if dtype in _UNIT_DIVISORS else 8 * samples
    channels = 1 if len(shape) == 2 else samples // math.prod(_spatial_shape(shape))
    working = _model_input_bytes(channels, _spatial_shape(shape), input_shape)
    reserve(samples * dtype.itemsize + as_float + working, f"the {'×'.join(map(str, shape))} .npy")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise InvalidImage("object arrays (pickled .npy) are refused") from None
        raise TruncatedImage(f"the .npy file is truncated or corrupt ({error})") from None
    except (EOFError, OSError) as error:
        raise TruncatedImage(f"the .npy file is truncated or corrupt ({error})") from None
    return _scale_array(array, "npy", max_pixels)


def _channels_last(shape: tuple[int, ...]) -> bool:
    """Whether a 3-D image array is ``[H, W, C]``: a channel count last and not first."""
    return len(shape) == 3 and shape[0] not in (1, 3, 4) and shape[-1] in (1, 3, 4)


def _spatial_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    if _channels_last(shape):
        return int(shape[0]), int(shape[1])
    return int(shape[1]), int(shape[2])


def _scale_array(array: np.ndarray, source: str, max_pixels: int) -> tuple[np.ndarray, list[str]]:
    """A numeric array as floats in ``[0, 1]``: floats as they are, 8/16-bit ints rescaled."""
    steps = [f"read {source} array of shape {tuple(array.shape)} dtype {array.dtype}"]
    if array.ndim not in (2, 3) or array.size == 0:
        raise InvalidImage(
            f"an image array must be [H, W], [C, H, W] or [H, W, C]; got shape {array.shape}"
        )
    height, width = _spatial_shape(array.shape)
    _check_pixels(height, width, max_pixels)
    if array.dtype == np.uint8:  # scaled by _to_model_input, a strip at a time
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
    return _scale_array(array, "JSON", max_pixels)


def _first_window(ds: pydicom.Dataset) -> tuple[float, float] | None:
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = ds["WindowCenter"].value, ds["WindowWidth"].value
    center = center[0] if isinstance(center, pydicom.multival.MultiValue) else center
    width = width[0] if isinstance(width, pydicom.multival.MultiValue) else width
    return float(center), float(width)


def usable_window(width: float, function: str) -> bool:
    """Whether a window width is valid for its function: ≥ 1 for LINEAR, > 0 otherwise."""
    return width >= 1.0 if function == "LINEAR" else width > 0.0


def apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """The DICOM VOI window (PS3.3 C.11.2.1.2–3) mapped straight to ``[0, 1]``."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    # LINEAR: the standard's half-pixel offsets, c − 0.5 and w − 1; w = 1 is a threshold.
    if width == 1.0:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _apply_voi_lut_sequence(ds: pydicom.Dataset, values: np.ndarray) -> tuple[np.ndarray, str]:
    """The first VOI LUT of the VOI LUT Sequence (PS3.3 C.11.2.1.1): values below the first
    mapped value take the first entry, values past the last take the last, the rest
    ``LUT[round(x) − first]``; scaled to ``[0, 1]`` by its output range ``2^bits − 1``."""
    item = ds.VOILUTSequence[0]
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536  # PS3.3: 0 means 2^16 entries
    if ds.get("PixelRepresentation", 0) == 1 and first >= 2**15:
        first -= 2**16  # the first mapped value is signed for signed pixel data
    data = item.LUTData
    table = (
        np.frombuffer(data, dtype="<u2") if isinstance(data, bytes) else np.asarray(data)
    ).astype(np.float64)
    if not 1 <= bits <= 16 or table.ndim != 1 or table.size != entries:
        raise InvalidImage("the DICOM VOI LUT does not match its LUT Descriptor")
    indices = np.clip(np.rint(values) - first, 0, entries - 1).astype(np.int64)
    maximum = float(2**bits - 1)
    mapped = np.clip(table[indices] / maximum, 0.0, 1.0)
    return mapped, f"applied the VOI LUT ({entries} entries, scaled by 1/{maximum:g})"


#: Bytes a deflated DICOM data set may inflate to, per pixel the service accepts: three
#: 16-bit samples of one frame, with room to spare for the header and a few more frames.
DEFLATED_BYTES_PER_PIXEL = 16
#: Inflated bytes allowed on top, for the elements before the pixel data.
DEFLATED_HEADER_BYTES = 1 << 20
_INFLATE_CHUNK = 1 << 20


def _check_inflated_size(data: bytes, max_pixels: int) -> None:
    """Refuse a Deflated Explicit VR Little Endian file (PS3.5 A.5) whose data set inflates
    past ``DEFLATED_BYTES_PER_PIXEL × max_pixels + DEFLATED_HEADER_BYTES`` bytes.

    pydicom inflates such a data set whole before any element can be checked, so a small
    upload could otherwise expand to gigabytes (a decompression bomb). The stream is inflated
    here in bounded chunks and counted; nothing is kept. Files with another transfer syntax,
    or a file meta group pydicom cannot read (refused later), pass through.
    """
    stream = io.BytesIO(data)
    try:
        read_preamble(stream, False)
        syntax = _read_file_meta_info(stream).get("TransferSyntaxUID")
    except Exception:
        return
    if syntax != DeflatedExplicitVRLittleEndian:
        return
    limit = DEFLATED_BYTES_PER_PIXEL * max_pixels + DEFLATED_HEADER_BYTES
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, inflated = data[stream.tell() :], 0
    try:
        while True:
            chunk = inflater.decompress(pending, _INFLATE_CHUNK)
            inflated += len(chunk)
            if inflated > limit:
                raise ImageTooLarge(
                    f"the deflated DICOM data set inflates to more than {limit:,} bytes (the "
                    f"limit for {max_pixels:,} pixels); send it uncompressed or as one frame"
                )
            pending = inflater.unconsumed_tail
            if not pending and len(chunk) < _INFLATE_CHUNK:
                return
    except zlib.error:
        raise InvalidImage("the deflated DICOM data set is corrupt") from None


def _read_dicom(data: bytes, max_pixels: int) -> pydicom.Dataset:
    _check_inflated_size(data, max_pixels)
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except (EOFError, pydicom.errors.BytesLengthException):
        raise TruncatedImage("the DICOM file is truncated; send the whole file") from None
    except Exception:
        # pydicom raises many kinds of errors on malformed files (struct.error, zlib.error,
        # ValueError, ...); none of their messages is quoted (they may hold header values).
        raise InvalidImage("the DICOM file could not be parsed") from None


def _header_int(ds: pydicom.Dataset, keyword: str, default: int) -> int:
    """An integer element of the header; an unreadable one is refused (its value unquoted)."""
    try:
        return int(ds.get(keyword, default))
    except (TypeError, ValueError):
        raise InvalidImage(f"the DICOM element {keyword} has an invalid value") from None


def _dicom_frame(ds: pydicom.Dataset, max_pixels: int) -> tuple[np.ndarray, list[str]]:
    if "PixelData" not in ds:
        if "Rows" in ds:
            raise TruncatedImage("the DICOM file ends before its pixel data; send the whole file")
        raise NotAnImage("the DICOM object has no pixel data (not an image: a report or plan?)")
    rows, columns = _header_int(ds, "Rows", 0), _header_int(ds, "Columns", 0)
    if rows < 1 or columns < 1:
        raise InvalidImage("the DICOM image has no Rows/Columns")
    _check_pixels(rows, columns, max_pixels)
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None:
        raise InvalidImage("the DICOM file has no transfer syntax in its file meta")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise UnsupportedMediaType(
            f"DICOM transfer syntax {syntax.name} ({syntax}) is not supported"
        ) from None
    if not decoder.is_available:
        raise MissingDICOMCodec(
            f"DICOM transfer syntax {syntax.name} ({syntax}) needs a codec that is not "
            f"installed; {DICOM_CODECS_HINT}"
        )
    frames = _header_int(ds, "NumberOfFrames", 1) or 1
    steps = [f"decoded DICOM {columns}×{rows} {ds.get('PhotometricInterpretation', '?')}"]
    try:
        frame = ds.pixel_array if frames == 1 else pydicom.pixels.pixel_array(ds, index=0)
    except RuntimeError as error:
        raise MissingDICOMCodec(
            f"the installed codecs cannot decode DICOM transfer syntax {syntax.name} ({error}); "
            f"{DICOM_CODECS_HINT}"
        ) from None
    except (ValueError, EOFError) as error:
        if "less than expected" in str(error) or isinstance(error, EOFError):
            raise TruncatedImage("the DICOM pixel data is truncated; send the whole file") from None
        raise InvalidImage(f"the DICOM pixel data could not be decoded ({error})") from None
    if frames > 1:
        steps.append(f"used frame 1 of {frames}")
    return frame, steps


def _dicom_to_unit_range(
    ds: pydicom.Dataset, frame: np.ndarray, steps: list[str]
) -> tuple[np.ndarray, list[str]]:
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise UnsupportedMediaType(
                f"DICOM photometric interpretation {photometric} is not supported; send "
                "MONOCHROME1, MONOCHROME2, RGB or YBR images"
            )
        maximum = float(2 ** _header_int(ds, "BitsStored", 8) - 1)
        return frame.astype(np.float64) / maximum, [*steps, f"scaled RGB by 1/{maximum:g}"]

    values = apply_modality_lut(frame, ds).astype(np.float64)
    if "ModalityLUTSequence" in ds:
        steps.append("applied the modality LUT")
    elif "RescaleSlope" in ds or "RescaleIntercept" in ds:
        steps.append(
            f"applied rescale slope {float(ds.get('RescaleSlope', 1)):g} "
            f"intercept {float(ds.get('RescaleIntercept', 0)):g}"
        )
    window = _first_window(ds)
    function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
    if window is not None and usable_window(window[1], function):
        values = apply_window(values, window[0], window[1], function)
        steps.append(f"applied window center {window[0]:g} width {window[1]:g} ({function})")
    elif "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        values, step = _apply_voi_lut_sequence(ds, values)
        steps.append(step)
    else:
        low, high = float(values.min()), float(values.max())
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
        steps.append(f"no usable window: scaled the value range [{low:g}, {high:g}] to [0, 1]")
    if photometric == "MONOCHROME1":
        values = 1.0 - values
        steps.append("inverted MONOCHROME1 (bright = high)")
    return values, steps


def _decode_dicom(
    data: bytes, max_pixels: int, input_shape: tuple[int, int, int], reserve: Reserve
) -> tuple[np.ndarray, list[str], str | None, int]:
    """A DICOM file's first frame in ``[0, 1]``, its Modality code and its frame count; a
    malformed header or pixel data is a 4xx.

    pydicom's warnings are silenced throughout: they quote element values, which may be
    patient data, and pydicom converts values lazily, whenever an element is first read.
    """
    with _warnings_as("ignore"):
        ds = _read_dicom(data, max_pixels)
        needed = _dicom_bytes(ds, input_shape)
    reserve(needed, "the DICOM frame")  # outside the filters, which decodes take in turns
    with _warnings_as("ignore"):
        return _decode_dicom_quietly(ds, max_pixels)


def _modality(ds: pydicom.Dataset) -> str | None:
    """The Modality (0008,0060) when it is a valid code; other text is not kept (nor quoted)."""
    try:
        code = str(ds.get("Modality", "")).strip().upper()
    except Exception:
        return None
    return code if MODALITY_CODE.fullmatch(code) else None


def _dicom_bytes(ds: pydicom.Dataset, input_shape: tuple[int, int, int]) -> int:
    """Peak bytes of decoding the first frame: its samples, four float64 copies of it (the
    modality LUT, the cast, the window's temporaries), then :func:`_model_input_bytes`."""
    try:
        rows, columns = _header_int(ds, "Rows", 0), _header_int(ds, "Columns", 0)
        channels = max(1, _header_int(ds, "SamplesPerPixel", 1))
        sample = max(1, (_header_int(ds, "BitsAllocated", 16) + 7) // 8)
    except Exception:
        return 0  # an unreadable header: the decode refuses it before allocating pixels
    samples = rows * columns * channels
    return samples * (sample + 4 * 8) + _model_input_bytes(channels, (rows, columns), input_shape)


def _decode_dicom_quietly(
    ds: pydicom.Dataset, max_pixels: int
) -> tuple[np.ndarray, list[str], str | None, int]:
    try:
        frame, steps = _dicom_frame(ds, max_pixels)
    except ServiceError:
        raise
    except Exception:
        # A required element missing or unreadable (pydicom raises AttributeError,
        # BytesLengthException, TypeError, ...); the element values are not quoted.
        raise InvalidImage(
            "the DICOM image could not be decoded: a required element (Rows, Columns, "
            "PhotometricInterpretation, PixelData, ...) is missing or malformed"
        ) from None
    try:
        values, steps = _dicom_to_unit_range(ds, frame, steps)
        return values, steps, _modality(ds), _header_int(ds, "NumberOfFrames", 1) or 1
    except ServiceError:
        raise
    except Exception:
        raise InvalidImage(
            "the DICOM header's rescale, LUT or window values cannot be applied"
        ) from None


def _resize(planes: np.ndarray, size: tuple[int, int], antialias: bool) -> np.ndarray:
    tensor = torch.from_numpy(planes).unsqueeze(0)
    resized = torch.nn.functional.interpolate(
        tensor, size=size, mode="bilinear", align_corners=False, antialias=antialias
    )
    return resized.squeeze(0).numpy()


def _to_model_input(
    values: np.ndarray, input_shape: tuple[int, int, int], steps: list[str]
) -> tuple[np.ndarray, list[str]]:
    """``[H, W]``, ``[C, H, W]`` or ``[H, W, C]`` floats in ``[0, 1]`` (or 8/16-bit samples,
    scaled here) → float32 ``[C, H, W]`` of the model.

    An image that shrinks is converted and resized a strip of rows at a time: the
    antialiased bilinear resize is separable, and torch resizes along the width first, so
    resizing each strip's width and then the stacked strips' height gives torch's own result
    without a float64 copy of the whole image."""
    channels, height, width = input_shape
    if values.ndim == 2:
        values = values[np.newaxis]
    elif _channels_last(values.shape):
        values = np.moveaxis(values, -1, 0)
        steps.append("moved channels first")
    if values.shape[0] == 4:
        values = values[:3]
        steps.append("dropped the 4th (alpha) channel")
    if values.shape[0] not in (1, 3):
        raise InvalidImage(f"an image needs 1, 3 or 4 channels; got shape {values.shape}")
    divisor = _unit_divisor(values)
    if values.shape[0] == 3 and channels == 1:
        mix = "luma"
        steps.append("converted RGB to grayscale (ITU-R BT.601 luma)")
    elif values.shape[0] == 1 and channels == 3:
        mix = "replicate"
        steps.append("replicated grayscale to 3 channels")
    elif values.shape[0] != channels:
        raise InvalidImage(f"the model takes {channels} channels; the image has {values.shape[0]}")
    else:
        mix = None

    def model_planes(block: np.ndarray) -> np.ndarray:
        """Rows of the image as float64 planes in [0, 1] with the model's channels."""
        block = np.array(block, dtype=np.float64)
        if divisor != 1.0:
            block /= divisor
        if mix == "luma":
            return np.tensordot(np.array([0.299, 0.587, 0.114]), block, axes=1)[np.newaxis]
        if mix == "replicate":
            return np.repeat(block, 3, axis=0)
        return block

    size = (int(values.shape[1]), int(values.shape[2]))
    if size == (height, width):
        planes = model_planes(values)
    else:
        antialias = _shrinks(size, input_shape)
        if antialias:
            rows = _strip_rows(values.shape[0], size[1])
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


#: Mean difference between colour channels above which an image carries colour (JPEG's
#: chroma noise on a grey picture stays below it).
COLOUR_TOLERANCE = 2 / 255
_COLOUR_SAMPLE_PIXELS = 1 << 16


def _received_facts(
    values: np.ndarray, *, modality: str | None = None, frames: int = 1
) -> dict[str, Any]:
    """What the received image was before it became the model's input: the facts that
    :mod:`service.input_fit` holds against the model card. The colour test reads a strided
    sample of at most about 65,536 pixels."""
    height, width = _spatial_shape(values.shape)
    planes = values[np.newaxis] if values.ndim == 2 else values
    if _channels_last(values.shape):
        planes = np.moveaxis(values, -1, 0)
    colour = "grey"
    divisor = _unit_divisor(values)  # 8/16-bit samples are scaled to [0, 1] later
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

        modality, frames = None, 1
        if format_name in ("png", "jpeg"):
            values, steps = _decode_raster(data, format_name, max_pixels, input_shape, reserve)
        elif format_name == "npy":
            values, steps = _decode_npy(data, max_pixels, input_shape, reserve)
        else:
            values, steps, modality, frames = _decode_dicom(data, max_pixels, input_shape, reserve)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise InvalidImage(
                "the image has NaN or infinite values after decoding (check the DICOM rescale "
                "and window values)"
            )
        original_shape = tuple(int(d) for d in values.shape)
        facts = _received_facts(values, modality=modality, frames=frames)
        tensor, steps = _to_model_input(values, input_shape, steps)
        del values
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
    declared size, then :func:`_to_model_input`'s), as :func:`decode_image` does."""
    shape = _nested_shape(nested)
    if len(shape) in (2, 3):
        _check_pixels(*_spatial_shape(shape), max_pixels)
    with ExitStack() as held:
        if budget is not None and len(shape) in (2, 3):
            channels = (
                1 if len(shape) == 2 else math.prod(shape) // math.prod(_spatial_shape(shape))
            )
            needed = 3 * 8 * math.prod(shape)
            needed += _model_input_bytes(channels, _spatial_shape(shape), input_shape)
            held.enter_context(budget.reserve(needed, f"the {'×'.join(map(str, shape))} array"))
        values, steps = array_from_json(nested, max_pixels)
        original_shape = tuple(int(d) for d in values.shape)
        received = hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()
        facts = _received_facts(values)
        tensor, steps = _to_model_input(values, input_shape, steps)
        del values
    return _describe(tensor, "array", original_shape, received, steps, facts)
