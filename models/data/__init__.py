"""Datasets for training and evaluation: the bundled digits and loaders for user-supplied files."""

from models.data.catalog import DATASETS, intended_input_of, load_dataset
from models.data.cifar import load_cifar
from models.data.dataset import ImageDataset
from models.data.digits import DIGITS_TEST_INDEX_RECIPE, digits_test_indices, load_digits_split
from models.data.image_folder import load_image_folder
from models.data.medmnist import MEDMNIST_FLAVORS, load_medmnist

__all__ = [
    "DATASETS",
    "DIGITS_TEST_INDEX_RECIPE",
    "MEDMNIST_FLAVORS",
    "ImageDataset",
    "digits_test_indices",
    "intended_input_of",
    "load_cifar",
    "load_dataset",
    "load_digits_split",
    "load_image_folder",
    "load_medmnist",
]
