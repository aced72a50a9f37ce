"""The shared preparation: its strip-wise shrink is torch's whole-image resize, bit for bit,
and arrays no model input can be made of are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.image_preparation import STRIP_SAMPLES, ImageLayoutError, prepare_image, strip_rows


def whole_image_reference(samples: np.ndarray, input_shape: tuple[int, int, int]) -> np.ndarray:
    """``[C, H, W]`` 8-bit samples scaled, mixed and resized in one piece (no strips)."""
    planes = samples.astype(np.float64) / 255.0
    if planes.shape[0] == 3 and input_shape[0] == 1:
        planes = np.tensordot(np.array([0.299, 0.587, 0.114]), planes, axes=1)[np.newaxis]
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(planes)[None],
        size=input_shape[1:],
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )[0].numpy()
    return np.clip(resized, 0.0, 1.0).astype(np.float32)


@pytest.mark.parametrize("input_shape", [(3, 64, 48), (1, 50, 70)], ids=["rgb", "luma"])
def test_a_shrink_in_strips_is_the_whole_image_resize_bit_for_bit(input_shape):
    rng = np.random.default_rng(11)
    samples = rng.integers(0, 256, size=(3, 700, 600), dtype=np.uint8)
    assert samples.size > STRIP_SAMPLES and strip_rows(3, 600) < 700  # several strips
    prepared, steps = prepare_image(samples, input_shape)
    assert any(step.startswith("resized 600×700") for step in steps)
    np.testing.assert_array_equal(prepared, whole_image_reference(samples, input_shape))


@pytest.mark.parametrize(
    ("shape", "message"),
    [((2, 8, 8), "1, 3 or 4 channels"), ((5, 8, 8), "1, 3 or 4 channels")],
)
def test_arrays_without_image_channels_are_refused(shape, message):
    with pytest.raises(ImageLayoutError, match=message):
        prepare_image(np.zeros(shape, dtype=np.float64), (1, 8, 8))


def test_a_model_with_neither_one_nor_three_channels_is_refused():
    with pytest.raises(ImageLayoutError, match="the model takes 2 channels; the image has 3"):
        prepare_image(np.zeros((3, 8, 8), dtype=np.float64), (2, 8, 8))
