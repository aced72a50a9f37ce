"""Bytes or arrays in, the model's input out: a float32 ``[C, H, W]`` tensor in ``[0, 1]``.

Accepted: PNG and JPEG (:mod:`.raster`), ``.npy`` (:mod:`.npy`, no pickle), DICOM
(:mod:`.dicom`) and nested arrays from JSON (:mod:`.arrays`). The format is recognised from the
content, not from the file name (:mod:`.sniff`), and decoded by its entry in
:data:`.formats.DECODERS`; the samples then take the one preparation path to the model's
input (:mod:`.to_model_input`, shared with training). Every step is recorded in
:class:`InputDescription` (:mod:`.description`), and the certified radius lives in the
returned tensor's space. Decoding never logs and never copies pixel values or DICOM header
values (patient tags) into messages.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.imaging.arrays import array_from_json
    from service.imaging.decode import DecodedImage, decode_array, decode_image
    from service.imaging.description import InputDescription
    from service.imaging.dicom import DICOM_CODECS_HINT, apply_window, usable_window
    from service.imaging.facts import COLOUR_TOLERANCE
    from service.imaging.formats import DECODERS
    from service.imaging.sniff import sniff_format

_HOMES = {
    "COLOUR_TOLERANCE": "facts",
    "DECODERS": "formats",
    "DICOM_CODECS_HINT": "dicom",
    "DecodedImage": "decode",
    "InputDescription": "description",
    "apply_window": "dicom",
    "array_from_json": "arrays",
    "decode_array": "decode",
    "decode_image": "decode",
    "sniff_format": "sniff",
    "usable_window": "dicom",
}
"""Where each public name lives. They are imported on first use, so a worker that reads only
:class:`InputDescription` does not load Pillow and pydicom with the decoders."""


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


__all__ = [
    "COLOUR_TOLERANCE",
    "DECODERS",
    "DICOM_CODECS_HINT",
    "DecodedImage",
    "InputDescription",
    "apply_window",
    "array_from_json",
    "decode_array",
    "decode_image",
    "sniff_format",
    "usable_window",
]
