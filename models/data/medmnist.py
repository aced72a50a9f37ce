"""MedMNIST ``.npz`` files (Yang et al. 2023, "MedMNIST v2"), read from a path the user gives.

A MedMNIST file holds ``{split}_images`` (uint8 ``[N, H, W]`` grey or ``[N, H, W, 3]`` RGB) and
``{split}_labels`` (``[N, 1]`` class indices, or ``[N, 14]`` 0/1 findings for ChestMNIST) for
the splits ``train``, ``val`` and ``test``; the MedMNIST+ sizes (64, 128, 224) use the same keys.

ChestMNIST (NIH ChestX-ray14) is multi-label: an image can show several of 14 findings, or none.
The certificates here are single-label (one class per image), so ChestMNIST is read as the
derived binary task "no finding" (label 0) against "any finding" (label 1: at least one of
the 14 present). The per-finding labels are not used.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.data.dataset import ImageDataset, images_from_uint8

MEDMNIST_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class MedMNISTFlavor:
    """What this loader knows about one MedMNIST dataset."""

    name: str
    source: str
    class_names: tuple[str, ...]
    multi_label: bool = False


MEDMNIST_FLAVORS = {
    flavor.name: flavor
    for flavor in (
        MedMNISTFlavor(
            "dermamnist",
            "DermaMNIST (HAM10000 dermatoscopy)",
            (
                "actinic keratoses and intraepithelial carcinoma",
                "basal cell carcinoma",
                "benign keratosis-like lesions",
                "dermatofibroma",
                "melanoma",
                "melanocytic nevi",
                "vascular lesions",
            ),
        ),
        MedMNISTFlavor(
            "pneumoniamnist",
            "PneumoniaMNIST (paediatric chest X-ray)",
            ("normal", "pneumonia"),
        ),
        MedMNISTFlavor(
            "chestmnist",
            "ChestMNIST (NIH ChestX-ray14), multi-label read as no finding / any finding",
            ("no finding", "any finding"),
            multi_label=True,
        ),
    )
}


def medmnist_flavor_of(path: Path) -> str:
    """The flavor named by a MedMNIST file name: ``dermamnist.npz``, ``chestmnist_64.npz``…"""
    match = re.fullmatch(r"([a-z]+mnist)(?:_\d+)?\.npz", path.name.lower())
    if match is None or match.group(1) not in MEDMNIST_FLAVORS:
        raise ValueError(
            f"cannot tell which MedMNIST dataset {path.name!r} is; name it after one of "
            f"{sorted(MEDMNIST_FLAVORS)} (e.g. dermamnist.npz) or pass the flavor"
        )
    return match.group(1)


def load_medmnist(path: str | Path, split: str, flavor: str | None = None) -> ImageDataset:
    """One split of a MedMNIST ``.npz`` file; ``flavor`` defaults to the one in the file name."""
    path = Path(path)
    if split not in MEDMNIST_SPLITS:
        raise ValueError(f"MedMNIST splits are {list(MEDMNIST_SPLITS)}, not {split!r}")
    name = flavor if flavor is not None else medmnist_flavor_of(path)
    if name not in MEDMNIST_FLAVORS:
        raise ValueError(f"unknown MedMNIST flavor {name!r}; known: {sorted(MEDMNIST_FLAVORS)}")
    info = MEDMNIST_FLAVORS[name]
    if not path.is_file():
        raise FileNotFoundError(f"MedMNIST file {path} does not exist")
    if not zipfile.is_zipfile(path):  # an .npz is a zip archive of .npy files
        raise ValueError(f"{path} is not a MedMNIST .npz file (not a zip archive of arrays)")
    # allow_pickle=False: an .npz holding object arrays is refused, never unpickled.
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = (f"{split}_images", f"{split}_labels")
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise ValueError(f"{path} has no {missing}; it holds {sorted(archive.files)}")
            pixels, raw_labels = archive[keys[0]], archive[keys[1]]
    except (zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"{path} is a damaged .npz file ({error})") from None
    if len(pixels) == 0 or len(pixels) != len(raw_labels):
        raise ValueError(
            f"{path}: the {split} split holds {len(pixels)} images and {len(raw_labels)} labels"
        )
    images = images_from_uint8(pixels, channels_last=True)
    if info.multi_label:
        labels = (raw_labels.reshape(len(raw_labels), -1) > 0).any(axis=1).astype(np.int64)
    else:
        labels = raw_labels.reshape(len(raw_labels), -1)
        if labels.shape[1] != 1:
            raise ValueError(
                f"{path}: {name} labels should be one class per image, got shape {raw_labels.shape}"
            )
        labels = labels[:, 0].astype(np.int64)
    return ImageDataset(
        name=name,
        split=split,
        images=images,
        labels=torch.from_numpy(labels),
        class_names=info.class_names,
        source=f"{info.source}: {path}",
        split_recipe=f"the official MedMNIST {split} split ({split}_images, {split}_labels)",
    )
