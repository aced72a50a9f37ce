"""What a radius is measured against: the input as the model sees it, beside the image received
and a few of the noisy inputs smoothing classifies.

``POST /v1/preview`` answers with :class:`InputPreview`; the page at ``/`` shows it next to a
result, so that "certified radius 0.17" can be read against the input's own size. Nothing here
certifies anything and nothing imports the web stack.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from pydantic import BaseModel, Field

from service.decode_budget import DecodeBudget
from service.imaging import decode_image
from service.imaging.description import InputDescription
from service.job_inputs import ImageUpload, decode_upload
from workers.model_cache import LoadedModel

NOISY_SAMPLES = 4
"""Noisy inputs shown: enough to see what σ does to the image, few enough to stay small."""
MAX_DISPLAY_SIDE = 256
"""The received image is shown at its own size, shrunk to at most this many pixels a side."""


class InputPreview(BaseModel):
    """The image as received, as the model sees it, and under smoothing noise; PNG data URLs."""

    model_id: str
    version: str
    input: InputDescription
    received: str = Field(
        description="PNG data URL: the decoded image (after DICOM rescale and windowing) at "
        f"its own size, shrunk to at most {MAX_DISPLAY_SIDE} pixels a side"
    )
    model_input: str = Field(
        description="PNG data URL: the model's input, the C×H×W tensor every radius is measured in"
    )
    sigma: float = Field(description="the smoothing noise of the samples")
    seed: str = Field(description="seed of the samples' noise (a string of digits)")
    noisy_samples: list[str] = Field(
        description=f"{NOISY_SAMPLES} PNG data URLs of x + σ·ε, ε ~ N(0, I), clipped to [0, 1] "
        "for display only (the certified classifier sees them unclipped)"
    )
    input_norm: float = Field(description="‖x‖₂ of the model's input, in the radii's space")
    noise_norm: float = Field(
        description="σ·√d, the typical L2 length of the smoothing noise in the same space "
        "(d = C·H·W)"
    )


def png_data_url(tensor: np.ndarray) -> str:
    """A ``[C, H, W]`` array in ``[0, 1]`` (C = 1 or 3) as a PNG ``data:`` URL."""
    from PIL import Image

    pixels = np.rint(np.clip(tensor, 0.0, 1.0) * 255).astype(np.uint8)
    image = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _display_shape(description: InputDescription) -> tuple[int, int, int]:
    height, width = description.original_size or description.shape[1:]
    scale = min(1.0, MAX_DISPLAY_SIDE / max(height, width))
    channels = 3 if description.colour == "rgb" else 1
    return channels, max(1, round(height * scale)), max(1, round(width * scale))


def input_preview(
    upload: ImageUpload,
    loaded: LoadedModel,
    *,
    sigma: float,
    seed: int,
    max_pixels: int,
    budget: DecodeBudget | None = None,
) -> InputPreview:
    """The upload decoded to ``loaded``'s input (as a job would be), the received image through
    the same decoding at display size, and :data:`NOISY_SAMPLES` noisy copies at ``sigma``
    drawn from ``seed`` (both resolved as a job's are: ``service.job_inputs``)."""
    decoded = decode_upload(upload, loaded, max_pixels, budget=budget)
    x = decoded.tensor.astype(np.float64)
    if upload.data is not None:
        shown = decode_image(
            upload.data, _display_shape(decoded.description), max_pixels=max_pixels, budget=budget
        ).tensor
    else:
        shown = decoded.tensor
    noise = np.random.default_rng(seed).standard_normal((NOISY_SAMPLES, *x.shape))
    return InputPreview(
        model_id=loaded.model_id,
        version=loaded.version,
        input=decoded.description,
        received=png_data_url(shown),
        model_input=png_data_url(decoded.tensor),
        sigma=sigma,
        seed=str(seed),
        noisy_samples=[png_data_url(x + sigma * eps) for eps in noise],
        input_norm=float(np.linalg.norm(x)),
        noise_norm=sigma * math.sqrt(x.size),
    )
