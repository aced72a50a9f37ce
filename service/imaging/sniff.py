"""The format of an upload, recognised from its leading bytes (never from its file name)."""

from __future__ import annotations

from service.errors import NotAnImage, UnsupportedMediaType

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
