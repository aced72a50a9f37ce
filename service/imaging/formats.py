"""Every accepted format and its decoder: adding a format is one decoder module, one entry
here and its magic bytes in :mod:`service.imaging.sniff`."""

from __future__ import annotations

from service.imaging.decoder import Decoder
from service.imaging.dicom import decode_dicom
from service.imaging.npy import decode_npy
from service.imaging.raster import decode_jpeg, decode_png

DECODERS: dict[str, Decoder] = {
    "png": decode_png,
    "jpeg": decode_jpeg,
    "npy": decode_npy,
    "dicom": decode_dicom,
}
