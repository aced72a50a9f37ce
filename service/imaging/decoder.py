"""What a decoder is: bytes in, samples and the steps taken out, under the pixel limit, the
decode memory budget and the warning filters it runs with."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.errors import ImageTooLarge

_WARNING_FILTERS = threading.Lock()


@contextmanager
def warnings_as(
    action: Literal["error", "ignore"], category: type[Warning] = Warning
) -> Iterator[None]:
    """Warnings of ``category`` turned into ``action`` while decoding (pydicom's warnings may
    quote header values; Pillow's bomb warning becomes an error). The warning filters are
    process-wide and ``catch_warnings`` is not thread-safe, so decodes that change them take
    turns; otherwise two overlapping ones could restore each other's filters."""
    with _WARNING_FILTERS, warnings.catch_warnings():
        warnings.simplefilter(action, category)
        yield


def check_pixels(height: int, width: int, max_pixels: int) -> None:
    if height * width > max_pixels:
        raise ImageTooLarge(
            f"image is {width}×{height} ({height * width:,} pixels); the limit is "
            f"{max_pixels:,} pixels"
        )


Reserve = Callable[[int, str], None]
"""Called by a decoder once it read its header and before it allocates pixels:
``reserve(bytes it will hold at once, what the image is)``; it may wait or refuse (413)."""


@dataclass(frozen=True)
class DecodedPixels:
    """A decoder's output: samples not yet at the model's input (``[H, W]``, ``[C, H, W]`` or
    ``[H, W, C]``; floats in ``[0, 1]``, or 8/16-bit integers) and what was done to them."""

    values: np.ndarray
    steps: list[str]
    modality: str | None = None
    """The DICOM Modality code, when the file is a DICOM with a valid one."""
    frames: int = 1


Decoder = Callable[[bytes, int, tuple[int, int, int], Reserve], DecodedPixels]
"""``decoder(data, max_pixels, input_shape, reserve)``; refusals are 4xx ``ServiceError``s."""
