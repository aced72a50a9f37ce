"""The same file gives the model the same tensor in training (the image-folder loader) and in
serving (the service's decoder): both take :func:`models.image_preparation.prepare_image`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.data import load_image_folder
from models.image_preparation import prepare_image
from service.imaging import decode_image
from service.imaging.dicom import decode_dicom
from tests.service.test_imaging import bundled

LIMIT = 4096 * 4096


def image_file(path: Path, array: np.ndarray, format_name: str = "PNG") -> bytes:
    """``array`` saved at ``path`` as ``format_name``; the file's bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=format_name)
    return path.read_bytes()


def served(data: bytes, input_shape: tuple[int, int, int]) -> torch.Tensor:
    return torch.from_numpy(decode_image(data, input_shape, max_pixels=LIMIT).tensor)


def pixels(rng: np.random.Generator, *shape: int, dtype: type = np.uint8) -> np.ndarray:
    return rng.integers(0, np.iinfo(dtype).max + 1, size=shape, dtype=dtype)


@pytest.mark.parametrize("size", [(8, 12), (37, 50)], ids=["shrunk", "enlarged"])
def test_grey_png_gives_the_same_tensor_in_training_and_serving(tmp_path, size):
    rng = np.random.default_rng(1)
    eight = image_file(tmp_path / "a" / "grey.png", pixels(rng, 24, 31))
    sixteen = image_file(tmp_path / "b" / "grey16.png", pixels(rng, 24, 31, dtype=np.uint16))
    trained = load_image_folder(tmp_path, split="train", size=size)
    assert trained.input_shape == (1, *size)
    assert torch.equal(trained.images[0], served(eight, (1, *size)))
    assert torch.equal(trained.images[1], served(sixteen, (1, *size)))


@pytest.mark.parametrize("size", [(8, 12), (37, 50)], ids=["shrunk", "enlarged"])
def test_rgb_png_and_jpeg_give_the_same_tensor_in_training_and_serving(tmp_path, size):
    rng = np.random.default_rng(2)
    png = image_file(tmp_path / "a" / "colour.png", pixels(rng, 24, 31, 3))
    jpeg = image_file(tmp_path / "b" / "colour.jpg", pixels(rng, 24, 31, 3), "JPEG")
    trained = load_image_folder(tmp_path, split="train", size=size)
    assert trained.input_shape == (3, *size)
    assert torch.equal(trained.images[0], served(png, (3, *size)))
    assert torch.equal(trained.images[1], served(jpeg, (3, *size)))


def test_grey_png_beside_colour_is_replicated_as_the_service_does(tmp_path):
    rng = np.random.default_rng(3)
    grey = image_file(tmp_path / "a" / "grey.png", pixels(rng, 24, 31))
    image_file(tmp_path / "b" / "colour.png", pixels(rng, 24, 31, 3))
    trained = load_image_folder(tmp_path, split="train", size=(8, 12))
    assert trained.input_shape == (3, 8, 12)
    assert torch.equal(trained.images[0], served(grey, (3, 8, 12)))


def test_colour_png_served_to_a_grey_model_takes_the_shared_luma(tmp_path):
    rng = np.random.default_rng(4)
    colour = pixels(rng, 24, 31, 3)
    data = image_file(tmp_path / "colour.png", colour)
    prepared, steps = prepare_image(colour, (1, 8, 12))
    assert "converted RGB to grayscale (ITU-R BT.601 luma)" in steps
    assert torch.equal(torch.from_numpy(prepared), served(data, (1, 8, 12)))


@pytest.mark.parametrize("input_shape", [(1, 32, 48), (3, 200, 150)], ids=["shrunk", "enlarged"])
def test_dicom_gives_the_shared_preparation_of_its_decoded_pixels(input_shape):
    """The image-folder loader reads no DICOM: a DICOM's decoded pixels (modality LUT, VOI
    window) prepared by the shared function are exactly what the service certifies."""
    data = bundled("CT_small.dcm")
    decoded = decode_dicom(data, LIMIT, input_shape, lambda *_: None)
    prepared, _ = prepare_image(decoded.values, input_shape)
    assert torch.equal(torch.from_numpy(prepared), served(data, input_shape))
