"""What was received and what was done to it: the record that travels with every job.

It imports pydantic only, so the workers, which store and return it, import it without the
decoders or the web stack.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class InputDescription(BaseModel):
    """What was received and what was done to it before certification (no pixel data)."""

    format: str
    """``png``, ``jpeg``, ``npy``, ``dicom`` or ``array`` (a JSON nested array)."""
    original_shape: tuple[int, ...]
    shape: tuple[int, int, int]
    """The ``[C, H, W]`` input space the certified radii live in (values in ``[0, 1]``)."""
    transforms: tuple[str, ...]
    """Each step from the received data to the certified tensor, in order."""
    sha256: str
    """SHA-256 of the bytes received (the file, or the canonical JSON of an array)."""
    tensor_sha256: str
    """SHA-256 of the certified float32 tensor (C order): the exact input of the certificates."""
    modality: str | None = None
    """The DICOM Modality (0008,0060) code, e.g. ``CT``; ``None`` for other formats, or a DICOM
    without a readable one."""
    frames: int = 1
    """Frames in the received file; only the first of a multi-frame DICOM is certified."""
    original_size: tuple[int, int] | None = None
    """``(H, W)`` of the received image, before any resizing."""
    original_channels: int | None = None
    """Channels of the received image: 1 grey, 3 colour, 4 with alpha."""
    colour: Literal["grey", "rgb"] | None = None
    """``rgb`` when the received pixels carry colour, else ``grey`` (three equal channels too)."""
    resize_factor: tuple[float, float] | None = None
    """Received size ÷ model input size along height and width: above 1 shrunk, below enlarged."""
    value_range: tuple[float, float] | None = None
    """The smallest and largest decoded value in ``[0, 1]``, before resizing."""
    warnings: tuple[str, ...] = ()
    """How this input departs from what the model was made for (its card's intended input),
    each a sentence; empty when nothing was found."""
