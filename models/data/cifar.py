"""CIFAR-10 and CIFAR-100 in their "python version" format, read from a directory the user gives.

The format (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html) is a set of Python
pickles, so ``pickle`` is how it must be read; it is used here for that data format only, never
for model weights (those are safetensors). The unpickler below resolves no global except the
numpy array constructors (and the byte-string codec) the format needs, so a file cannot make
it run arbitrary code.

- CIFAR-10 (``cifar-10-batches-py/``): ``data_batch_1`` … ``data_batch_5`` (train),
  ``test_batch``, and ``batches.meta`` with ``label_names``; each batch holds ``data``
  (uint8 ``[N, 3072]``: the red, green and blue 32×32 planes, row-major) and ``labels``.
- CIFAR-100 (``cifar-100-python/``): ``train``, ``test`` and ``meta`` with
  ``fine_label_names``; batches hold ``data`` and ``fine_labels`` (the 100 classes used here).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.data.dataset import ImageDataset, images_from_uint8

CIFAR_SPLITS = ("train", "test")

_ALLOWED_GLOBALS = {
    # byte strings in a protocol-2 pickle written by Python 3
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"a CIFAR batch file may not reference {module}.{name}; refusing to load it"
            )
        return super().find_class(module, name)


def _read_batch(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR file {path} does not exist")
    with path.open("rb") as handle:
        # encoding="bytes": the files were written by Python 2, their keys are byte strings.
        try:
            content = _CifarUnpickler(handle, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
            raise ValueError(f"{path} is not a readable CIFAR batch: {error}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path} is not a CIFAR batch (a pickled dict)")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in content.items()}


def _field(batch: dict[str, Any], key: str, path: Path) -> Any:
    if key not in batch:
        raise ValueError(f"{path} has no {key!r}; it holds {sorted(batch)}")
    return batch[key]


def _names(values: list[Any]) -> tuple[str, ...]:
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)


def _pixels(batch: dict[str, Any], path: Path) -> np.ndarray:
    data = np.asarray(batch.get("data"))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}")
    return data.reshape(-1, 3, 32, 32)


def load_cifar(root: str | Path, split: str, num_classes: int) -> ImageDataset:
    """The ``train`` or ``test`` split of CIFAR-``num_classes`` (10 or 100) under ``root``."""
    root = Path(root)
    if split not in CIFAR_SPLITS:
        raise ValueError(f"CIFAR splits are {list(CIFAR_SPLITS)}, not {split!r}")
    if num_classes == 10:
        meta, label_key, names_key = "batches.meta", "labels", "label_names"
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    elif num_classes == 100:
        meta, label_key, names_key = "meta", "fine_labels", "fine_label_names"
        files = [split]
    else:
        raise ValueError(f"CIFAR comes with 10 or 100 classes, not {num_classes}")
    class_names = _names(_field(_read_batch(root / meta), names_key, root / meta))
    pixels, labels = [], []
    for name in files:
        batch = _read_batch(root / name)
        pixels.append(_pixels(batch, root / name))
        labels.extend(int(label) for label in _field(batch, label_key, root / name))
    return ImageDataset(
        name=f"cifar{num_classes}",
        split=split,
        images=images_from_uint8(np.concatenate(pixels), channels_last=False),
        labels=torch.tensor(labels, dtype=torch.int64),
        class_names=class_names,
        source=f"CIFAR-{num_classes} python version: {root}",
        split_recipe=f"the official CIFAR-{num_classes} {split} split ({', '.join(files)})",
    )
