"""DICOM (pydicom): the first frame, its modality LUT and VOI window, in ``[0, 1]``.

The first frame of a multi-frame object; the modality LUT or rescale slope/intercept; the
first VOI window when the file has a valid one (PS3.3 C.11.2.1.2), else the first VOI LUT of
its VOI LUT Sequence, else the frame's own value range; MONOCHROME1 inverted so that bright
means high; colour converted to RGB by pydicom. Compressed transfer syntaxes need codecs (the
``dicom`` extra); a missing one is a 415. A deflated data set is inflated in bounded chunks and
refused when it grows past what the pixel limit allows, before pydicom inflates it whole.
Nothing here logs or quotes header values (patient tags).
"""

from __future__ import annotations

import io
import logging
import zlib

import numpy as np
import pydicom
import pydicom.errors
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import DeflatedExplicitVRLittleEndian

from models.card import MODALITY_CODE
from service.errors import (
    ImageTooLarge,
    InvalidImage,
    MissingDICOMCodec,
    NotAnImage,
    ServiceError,
    TruncatedImage,
    UnsupportedMediaType,
)
from service.imaging.decoder import DecodedPixels, Reserve, check_pixels, warnings_as
from service.imaging.to_model_input import model_input_bytes

# pydicom's own warnings and log records can quote element values (patient names among them):
# its records stop at its own logger and never reach the service's handlers.
logging.getLogger("pydicom").setLevel(logging.ERROR)
logging.getLogger("pydicom").propagate = False

DICOM_CODECS_HINT = "install the optional codecs: pip install 'hycas-certify[dicom]'"


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
    check_pixels(rows, columns, max_pixels)
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


def decode_dicom(
    data: bytes, max_pixels: int, input_shape: tuple[int, int, int], reserve: Reserve
) -> DecodedPixels:
    """A DICOM file's first frame in ``[0, 1]``, its Modality code and its frame count; a
    malformed header or pixel data is a 4xx.

    pydicom's warnings are silenced throughout: they quote element values, which may be
    patient data, and pydicom converts values lazily, whenever an element is first read.
    """
    with warnings_as("ignore"):
        ds = _read_dicom(data, max_pixels)
        needed = _dicom_bytes(ds, input_shape)
    reserve(needed, "the DICOM frame")  # outside the filters, which decodes take in turns
    with warnings_as("ignore"):
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
    modality LUT, the cast, the window's temporaries), then :func:`model_input_bytes`."""
    try:
        rows, columns = _header_int(ds, "Rows", 0), _header_int(ds, "Columns", 0)
        channels = max(1, _header_int(ds, "SamplesPerPixel", 1))
        sample = max(1, (_header_int(ds, "BitsAllocated", 16) + 7) // 8)
    except Exception:
        return 0  # an unreadable header: the decode refuses it before allocating pixels
    samples = rows * columns * channels
    return samples * (sample + 4 * 8) + model_input_bytes(channels, (rows, columns), input_shape)


def _decode_dicom_quietly(ds: pydicom.Dataset, max_pixels: int) -> DecodedPixels:
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
        frames = _header_int(ds, "NumberOfFrames", 1) or 1
        return DecodedPixels(values, steps, _modality(ds), frames)
    except ServiceError:
        raise
    except Exception:
        raise InvalidImage(
            "the DICOM header's rescale, LUT or window values cannot be applied"
        ) from None
