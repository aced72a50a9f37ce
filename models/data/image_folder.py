"""An image folder: one sub-folder per class, images read with Pillow.

Layout: ``<directory>/<class name>/<image>`` (PNG, JPEG, BMP, TIFF, …). Classes are the
sub-folder names in sorted order, or the given ``class_names`` (a model's, or the train
split's), which label each sub-folder by its name: a split may then lack classes but not add
any. Files Pillow cannot read are an error, not skipped. Images are grey (one channel) when
every image is grey, RGB otherwise; all must share one size unless ``size`` is given, in which
case they are resized and the recipe says so. Pixels are read as the service reads a PNG or
JPEG (8- or 16-bit samples; other modes converted to L or RGB) and then take the service's own
preparation (:func:`models.image_preparation.prepare_image`), so a file gives the model the
same tensor in training, evaluation and serving.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from models.data.dataset import ImageDataset, class_indices
from models.image_preparation import prepare_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def _samples(image: Image.Image) -> np.ndarray:
    """``[H, W]`` or ``[H, W, 3]`` samples as the service's raster decoder reads them: 16-bit
    grey as uint16, L and RGB as uint8, grey modes converted to L and the others to RGB."""
    if image.mode.startswith("I;16"):
        return np.asarray(image, dtype=np.uint16)
    if image.mode not in ("L", "RGB"):
        image = image.convert("L" if image.mode in _GREY_MODES else "RGB")
    return np.asarray(image, dtype=np.uint8)


def load_image_folder(
    directory: str | Path,
    *,
    split: str,
    size: tuple[int, int] | None = None,
    class_names: Sequence[str] | None = None,
) -> ImageDataset:
    """Every image under ``directory/<class>/``, labelled by its sub-folder's position in
    ``class_names`` (default: the sorted sub-folder names)."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    folder_names = [p.name for p in class_dirs]
    if class_names is None:
        if len(class_dirs) < 2:
            raise ValueError(
                f"{root} must hold one sub-folder per class (at least two); found {folder_names}"
            )
        class_names = folder_names
        recipe = f"every image under {root}/<class>/, classes in sorted folder order"
    else:
        if not class_dirs:
            raise ValueError(f"{root} must hold one sub-folder per class; found none")
        recipe = f"every image under {root}/<class>/, labelled by name in {list(class_names)}"
    where = f"sub-folder(s) of {root}"
    labels = class_indices(folder_names, class_names, where=where)
    files: list[tuple[Path, int]] = []
    for label, class_dir in zip(labels, class_dirs, strict=True):
        found = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ValueError(f"class folder {class_dir} holds no images ({sorted(IMAGE_SUFFIXES)})")
        files.extend((path, label) for path in found)

    opened: list[Image.Image] = []
    for path, _ in files:
        try:
            with Image.open(path) as image:
                image.load()
                opened.append(image.copy())
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"cannot read image {path}: {error}") from error
    channels = 1 if all(image.mode in _GREY_MODES for image in opened) else 3
    sizes = {image.size for image in opened}
    if size is None and len(sizes) > 1:
        raise ValueError(
            f"images under {root} have different sizes {sorted(sizes)}; pass a size to resize"
        )
    height, width = size if size is not None else opened[0].size[::-1]
    input_shape = (channels, height, width)
    images = torch.from_numpy(
        np.stack([prepare_image(_samples(image), input_shape)[0] for image in opened])
    )
    if size is not None:
        recipe += (
            f", resized to {height}×{width} (bilinear, antialiased when shrinking; "
            "models.image_preparation)"
        )
    return ImageDataset(
        name=f"image-folder:{root.name}",
        split=split,
        images=images,
        labels=torch.tensor([label for _, label in files], dtype=torch.int64),
        class_names=tuple(class_names),
        source=f"image folder {root}",
        split_recipe=recipe,
    )
