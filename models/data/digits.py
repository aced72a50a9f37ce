"""scikit-learn's bundled handwritten digits: 1,797 grey 8×8 images, 10 classes, no download.

Pixels are the integers 0..16 of the UCI "Optical Recognition of Handwritten Digits" set;
they are divided by 16 into ``[0, 1]``. The split is fixed: 25 % of the images, stratified by
class, are the held-out test split (:data:`DIGITS_TEST_INDEX_RECIPE`), the rest train.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from models.data.dataset import ImageDataset

DIGITS_SIZE = 1797

DIGITS_TEST_INDEX_RECIPE = (
    "test indices = sklearn.model_selection.train_test_split(numpy.arange(1797), "
    "test_size=0.25, random_state=0, stratify=sklearn.datasets.load_digits().target)[1]; "
    "train indices = the other 1347, in increasing order"
)

DIGITS_SOURCE = "sklearn.datasets.load_digits() (bundled with scikit-learn), pixels / 16"


def digits_test_indices() -> np.ndarray:
    """The 450 held-out indices of the fixed split, in the order the recipe returns them."""
    return train_test_split(
        np.arange(DIGITS_SIZE),
        test_size=0.25,
        random_state=0,
        stratify=load_digits().target,
    )[1]


def load_digits_split(split: str) -> ImageDataset:
    """The ``train`` (1,347 images) or ``test`` (450 images) split of the digits."""
    if split not in ("train", "test"):
        raise ValueError(f"the digits have a 'train' and a 'test' split, not {split!r}")
    bunch = load_digits()
    test = digits_test_indices()
    indices = test if split == "test" else np.setdiff1d(np.arange(DIGITS_SIZE), test)
    images = torch.from_numpy(bunch.images[indices] / 16.0).to(torch.float32).unsqueeze(1)
    return ImageDataset(
        name="digits",
        split=split,
        images=images,
        labels=torch.from_numpy(bunch.target[indices]).to(torch.int64),
        class_names=tuple(str(int(c)) for c in bunch.target_names),
        source=DIGITS_SOURCE,
        split_recipe=DIGITS_TEST_INDEX_RECIPE,
    )
