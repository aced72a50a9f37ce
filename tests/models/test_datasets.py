"""Dataset loaders on files written here in each real format; the digits' fixed split."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from models.data import (
    DIGITS_TEST_INDEX_RECIPE,
    ImageDataset,
    load_cifar,
    load_dataset,
    load_digits_split,
    load_image_folder,
    load_medmnist,
)


def test_digits_split_is_the_recipe_of_the_issue():
    bunch = load_digits()
    expected = train_test_split(
        np.arange(1797), test_size=0.25, random_state=0, stratify=bunch.target
    )[1]
    test, train = load_digits_split("test"), load_digits_split("train")
    assert (len(test), len(train)) == (450, 1347)
    assert torch.equal(test.images[:, 0], torch.from_numpy(bunch.images[expected] / 16).float())
    assert torch.equal(test.labels, torch.from_numpy(bunch.target[expected]))
    train_rows = {tuple(row) for row in train.images.flatten(1).tolist()}
    test_rows = [tuple(row) for row in test.images.flatten(1).tolist()]
    assert sum(row in train_rows for row in test_rows) <= 2  # only exact duplicate digits
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) == 1.0
    assert test.input_shape == (1, 8, 8) and test.class_names == tuple("0123456789")
    per_class = np.bincount(test.labels.numpy()) - 0.25 * np.bincount(bunch.target)
    assert np.abs(per_class).max() <= 1  # stratified
    assert "random_state=0" in DIGITS_TEST_INDEX_RECIPE and "stratify" in test.split_recipe


def test_digits_refuse_a_split_or_path_they_do_not_have():
    with pytest.raises(ValueError, match="'train' and a 'test'"):
        load_digits_split("val")
    with pytest.raises(ValueError, match="no data path"):
        load_dataset("digits", "test", "/somewhere")


def write_medmnist(path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> None:
    arrays = {f"{s}_images": a for s, a in images.items()}
    arrays.update({f"{s}_labels": a for s, a in labels.items()})
    np.savez_compressed(path, **arrays)


def random_pixels(rng, *shape) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def test_dermamnist_rgb_channels_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    pixels = random_pixels(rng, 6, 28, 28, 3)
    labels = np.array([[0], [6], [3], [1], [2], [5]], dtype=np.uint8)
    write_medmnist(tmp_path / "dermamnist.npz", {"test": pixels}, {"test": labels})
    data = load_medmnist(tmp_path / "dermamnist.npz", "test")
    assert data.input_shape == (3, 28, 28) and data.channel_order == "RGB"
    assert len(data.class_names) == 7 and data.class_names[4] == "melanoma"
    assert data.labels.tolist() == [0, 6, 3, 1, 2, 5]
    assert float(data.images[2, 1, 5, 7]) == pytest.approx(pixels[2, 5, 7, 1] / 255)


def test_pneumoniamnist_grey_file_name_with_size(tmp_path):
    rng = np.random.default_rng(1)
    pixels = random_pixels(rng, 4, 64, 64)
    path = tmp_path / "pneumoniamnist_64.npz"
    write_medmnist(path, {"val": pixels}, {"val": np.array([[0], [1], [1], [0]])})
    data = load_medmnist(path, "val")
    assert data.name == "pneumoniamnist" and data.input_shape == (1, 64, 64)
    assert data.class_names == ("normal", "pneumonia")
    assert torch.equal(data.images[:, 0], torch.from_numpy(pixels).float() / 255)


def test_chestmnist_multi_label_becomes_any_finding(tmp_path):
    rng = np.random.default_rng(2)
    findings = np.zeros((4, 14), dtype=np.uint8)
    findings[1, 3] = 1
    findings[2, [0, 13]] = 1
    path = tmp_path / "chest.npz"
    write_medmnist(path, {"train": random_pixels(rng, 4, 28, 28)}, {"train": findings})
    data = load_dataset("chestmnist", "train", path)
    assert data.labels.tolist() == [0, 1, 1, 0]
    assert data.class_names == ("no finding", "any finding")


def test_medmnist_errors_say_what_is_wrong(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "dermamnist.npz"
    write_medmnist(path, {"train": random_pixels(rng, 2, 28, 28, 3)}, {"train": np.zeros((2, 1))})
    with pytest.raises(ValueError, match="test_images"):
        load_medmnist(path, "test")
    with pytest.raises(ValueError, match="cannot tell which MedMNIST"):
        load_medmnist(tmp_path / "mystery.npz", "train")
    np.savez(tmp_path / "pneumoniamnist.npz", test_images=np.array([object()]), test_labels=[0])
    with pytest.raises(ValueError, match="allow_pickle=False"):
        load_medmnist(tmp_path / "pneumoniamnist.npz", "test")


def cifar_rows(rng, count: int) -> np.ndarray:
    return random_pixels(rng, count, 3072)


def dump(path, content) -> None:
    with path.open("wb") as handle:
        pickle.dump(content, handle, protocol=2)


def test_cifar10_python_batches(tmp_path):
    rng = np.random.default_rng(4)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump(tmp_path / "batches.meta", {b"label_names": names, b"num_cases_per_batch": 2})
    rows = {}
    for i in range(1, 6):
        rows[i] = cifar_rows(rng, 2)
        dump(tmp_path / f"data_batch_{i}", {b"data": rows[i], b"labels": [i, 9 - i]})
    dump(tmp_path / "test_batch", {b"data": cifar_rows(rng, 3), b"labels": [0, 1, 2]})
    train = load_cifar(tmp_path, "train", 10)
    assert len(train) == 10 and train.input_shape == (3, 32, 32)
    assert train.labels.tolist()[:4] == [1, 8, 2, 7] and train.class_names[9] == "truck"
    # data rows are the red, green, blue planes of 32×32, row-major
    row = rows[1][1]
    assert float(train.images[1, 2, 3, 4]) == pytest.approx(row[2 * 1024 + 3 * 32 + 4] / 255)
    assert len(load_dataset("cifar10", "test", tmp_path)) == 3


def test_cifar100_fine_labels(tmp_path):
    rng = np.random.default_rng(5)
    fine = [f"class{i}".encode() for i in range(100)]
    dump(tmp_path / "meta", {b"fine_label_names": fine, b"coarse_label_names": [b"x"] * 20})
    batch = {b"data": cifar_rows(rng, 2), b"fine_labels": [99, 5], b"coarse_labels": [1, 2]}
    dump(tmp_path / "test", batch)
    data = load_cifar(tmp_path, "test", 100)
    assert data.labels.tolist() == [99, 5] and data.class_names[99] == "class99"


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar_pickle_with_foreign_globals_is_refused(tmp_path):
    dump(tmp_path / "batches.meta", {b"label_names": [b"a", b"b"], b"payload": Exploit()})
    with pytest.raises(ValueError, match=r"not a readable CIFAR batch: .*may not reference"):
        load_cifar(tmp_path, "test", 10)


def write_png(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_grey_and_rgb(tmp_path):
    rng = np.random.default_rng(6)
    grey = random_pixels(rng, 10, 12)
    write_png(tmp_path / "grey" / "train" / "normal" / "a.png", grey)
    write_png(tmp_path / "grey" / "train" / "tumour" / "b.png", random_pixels(rng, 10, 12))
    write_png(tmp_path / "grey" / "train" / "tumour" / "c.png", random_pixels(rng, 10, 12))
    data = load_dataset("image-folder", "train", tmp_path / "grey")
    assert data.class_names == ("normal", "tumour") and data.labels.tolist() == [0, 1, 1]
    assert data.input_shape == (1, 10, 12)
    assert torch.equal(data.images[0, 0], torch.from_numpy(grey).float() / 255)

    rgb = random_pixels(rng, 8, 8, 3)
    write_png(tmp_path / "rgb" / "cat" / "x.png", rgb)
    write_png(tmp_path / "rgb" / "dog" / "y.png", random_pixels(rng, 8, 8))
    mixed = load_image_folder(tmp_path / "rgb", split="test")
    assert mixed.input_shape == (3, 8, 8)
    assert float(mixed.images[0, 2, 1, 3]) == pytest.approx(rgb[1, 3, 2] / 255)


def test_image_folder_sizes_must_agree_unless_resized(tmp_path):
    rng = np.random.default_rng(7)
    write_png(tmp_path / "a" / "1.png", random_pixels(rng, 8, 8))
    write_png(tmp_path / "b" / "2.png", random_pixels(rng, 16, 16))
    with pytest.raises(ValueError, match="different sizes"):
        load_image_folder(tmp_path, split="train")
    resized = load_image_folder(tmp_path, split="train", size=(4, 6))
    assert resized.input_shape == (1, 4, 6) and "resized" in resized.split_recipe
    (tmp_path / "b" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image_folder(tmp_path, split="train", size=(4, 6))
    with pytest.raises(FileNotFoundError, match="<split>/<class>"):
        load_dataset("image-folder", "test", tmp_path)


def write_image_folder(root, classes_by_split: dict[str, str], images_per_class: int = 2) -> None:
    """``root/<split>/<class>/<i>.png``: 8×8 grey images, ``images_per_class`` per class."""
    rng = np.random.default_rng(8)
    for split, classes in classes_by_split.items():
        for name in classes:
            for i in range(images_per_class):
                write_png(root / split / name / f"{i}.png", random_pixels(rng, 8, 8))


def test_image_folder_split_missing_a_class_is_labelled_by_class_name(tmp_path):
    write_image_folder(tmp_path, {"train": "abc", "test": "ac"})
    train = load_dataset("image-folder", "train", tmp_path)
    test = load_dataset("image-folder", "test", tmp_path, class_names=train.class_names)
    assert test.class_names == train.class_names == ("a", "b", "c")
    assert test.labels.tolist() == [0, 0, 2, 2]
    shuffled = load_image_folder(tmp_path / "test", split="test", class_names=("c", "b", "a"))
    assert shuffled.labels.tolist() == [2, 2, 0, 0]


def test_image_folder_refuses_a_folder_that_is_not_a_class(tmp_path):
    write_image_folder(tmp_path, {"train": "abc", "test": "acd"})
    with pytest.raises(ValueError, match=r"\['d'\].*\['a', 'b', 'c'\]"):
        load_dataset("image-folder", "test", tmp_path, class_names=("a", "b", "c"))


def test_fixed_class_datasets_are_relabelled_by_name():
    digits = load_digits_split("test")
    reversed_names = tuple(reversed(digits.class_names))
    relabelled = load_dataset("digits", "test", class_names=reversed_names)
    assert relabelled.class_names == reversed_names
    assert torch.equal(relabelled.labels, 9 - digits.labels)
    with pytest.raises(ValueError, match=r"\['9'\] are not among the expected classes"):
        load_dataset("digits", "test", class_names=(*"012345678", "nine"))


def test_dataset_refuses_values_outside_the_unit_interval():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ImageDataset(
            name="x",
            split="test",
            images=torch.full((2, 1, 4, 4), 1.5),
            labels=torch.tensor([0, 1]),
            class_names=("a", "b"),
            source="test",
            split_recipe="test",
        )
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet", "train", "/data")
