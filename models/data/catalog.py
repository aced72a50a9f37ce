"""Datasets by name: what ``hycas train`` and ``hycas evaluate`` accept as ``--dataset``.

Nothing is downloaded: except for the bundled digits, the user points ``--data-path`` at files
in the dataset's own format.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from models.card import IntendedInput
from models.data.cifar import load_cifar
from models.data.dataset import ImageDataset
from models.data.digits import load_digits_split
from models.data.image_folder import load_image_folder
from models.data.medmnist import MEDMNIST_FLAVORS, load_medmnist

DATASETS = {
    "digits": "scikit-learn's bundled 8×8 digits (no path; splits train, test)",
    "dermamnist": "DermaMNIST .npz file (splits train, val, test)",
    "pneumoniamnist": "PneumoniaMNIST .npz file (splits train, val, test)",
    "chestmnist": "ChestMNIST .npz file, read as no finding / any finding (train, val, test)",
    "cifar10": "the cifar-10-batches-py directory (splits train, test)",
    "cifar100": "the cifar-100-python directory, fine labels (splits train, test)",
    "image-folder": "a directory with one folder per split, each with one folder per class",
}
"""Every dataset name, with what ``path`` must point at."""

_INPUT_KINDS = {
    "digits": ("handwritten digit", ()),
    "dermamnist": ("dermatoscopy", ()),
    "pneumoniamnist": ("paediatric chest X-ray", ("DX", "CR")),
    "chestmnist": ("chest X-ray", ("DX",)),
    "cifar10": ("natural photograph", ()),
    "cifar100": ("natural photograph", ()),
}
"""What each dataset's images show, and the DICOM modalities of their kind (MedMNIST images
were exported from such studies; empty: nothing from a DICOM file resembles them)."""


def intended_input_of(
    name: str, dataset: ImageDataset, path: str | Path | None = None
) -> IntendedInput:
    """What a model trained on ``dataset`` (dataset ``name`` read from ``path``) was made for:
    its kind of image, channels, size and colour. An image folder's kind is its folder's name,
    its colour what its images were."""
    default = (f"'{Path(path).name if path is not None else name}' image-folder", ())
    kind, modalities = _INPUT_KINDS.get(name, default)
    channels, height, width = dataset.input_shape
    return IntendedInput(
        kind=kind,
        channels=channels,
        native_size=(height, width),
        colour="grey" if channels == 1 else "rgb",
        modalities=modalities,
    )


def load_dataset(
    name: str,
    split: str,
    path: str | Path | None = None,
    *,
    class_names: Sequence[str] | None = None,
) -> ImageDataset:
    """The ``split`` of dataset ``name`` (see :data:`DATASETS` for what ``path`` is). With
    ``class_names`` (a model's, or the train split's), labels index them, matched by name; a
    class of the split that is not among them is refused."""
    dataset = _load_split(name, split, path, class_names)
    return dataset if class_names is None else dataset.relabelled(class_names)


def _load_split(
    name: str, split: str, path: str | Path | None, class_names: Sequence[str] | None
) -> ImageDataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    if name == "digits":
        if path is not None:
            raise ValueError("the digits are bundled with scikit-learn; give no data path")
        return load_digits_split(split)
    if path is None:
        raise ValueError(f"dataset {name!r} needs a data path: {DATASETS[name]}")
    if name in MEDMNIST_FLAVORS:
        return load_medmnist(path, split, flavor=name)
    if name in ("cifar10", "cifar100"):
        return load_cifar(path, split, num_classes=int(name.removeprefix("cifar")))
    split_dir = Path(path) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"image folder split {split_dir} does not exist; expected {path}/<split>/<class>/*"
        )
    # An image folder's classes are its sub-folders: only names can match them across splits.
    return load_image_folder(split_dir, split=split, class_names=class_names)
