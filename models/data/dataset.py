"""The in-memory image dataset every loader returns: float32 images in [0, 1], integer labels.

Images are ``[N, C, H, W]`` float32 tensors in ``[0, 1]`` — the input space the certified radii
live in (see ARCHITECTURE.md). Normalisation (mean/std) is not applied here: it happens inside
the model, where its Lipschitz bound covers it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models.card import CHANNEL_ORDERS


@dataclass(frozen=True)
class ImageDataset:
    """One split of a labelled image dataset, held in memory."""

    name: str
    """The dataset, e.g. ``digits`` or ``dermamnist``."""
    split: str
    """``train``, ``val`` or ``test``."""
    images: torch.Tensor
    """float32 ``[N, C, H, W]`` with values in ``[0, 1]``."""
    labels: torch.Tensor
    """int64 ``[N]`` with values in ``range(len(class_names))``."""
    class_names: tuple[str, ...]
    source: str
    """Where the images came from (a file, a directory, a bundled dataset)."""
    split_recipe: str
    """How this split was obtained, precisely enough to rebuild it."""

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if images.dtype != torch.float32 or images.ndim != 4:
            raise ValueError(
                f"{self.name}/{self.split}: images must be float32 [N, C, H, W], got "
                f"{images.dtype} of shape {tuple(images.shape)}"
            )
        if images.shape[1] not in CHANNEL_ORDERS:
            raise ValueError(
                f"{self.name}/{self.split}: images have {images.shape[1]} channels; "
                "1 (grey) or 3 (RGB) are supported"
            )
        if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
            raise ValueError(
                f"{self.name}/{self.split}: labels must be int64 [{images.shape[0]}], got "
                f"{labels.dtype} of shape {tuple(labels.shape)}"
            )
        if images.shape[0] == 0:
            raise ValueError(f"{self.name}/{self.split}: the split has no images")
        if not bool(torch.isfinite(images).all()) or images.min() < 0 or images.max() > 1:
            raise ValueError(f"{self.name}/{self.split}: image values must lie in [0, 1]")
        if len(self.class_names) < 2:
            raise ValueError(f"{self.name}/{self.split}: need at least two classes")
        if labels.min() < 0 or labels.max() >= len(self.class_names):
            raise ValueError(
                f"{self.name}/{self.split}: labels must lie in [0, {len(self.class_names) - 1}], "
                f"got [{int(labels.min())}, {int(labels.max())}]"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def channel_order(self) -> str:
        return CHANNEL_ORDERS[self.input_shape[0]]

    def head(self, count: int) -> ImageDataset:
        """The first ``count`` images (all of them when there are fewer)."""
        if count < 1:
            raise ValueError(f"count must be ≥ 1, got {count}")
        return dataclasses.replace(
            self,
            images=self.images[:count],
            labels=self.labels[:count],
            split_recipe=f"the first {min(count, len(self))} images of: {self.split_recipe}",
        )

    def relabelled(self, class_names: Sequence[str]) -> ImageDataset:
        """The same images with labels indexing ``class_names`` (e.g. a model's), matched by
        name: ``class_names`` may hold more classes than this split, never fewer."""
        class_names = tuple(class_names)
        if class_names == self.class_names:
            return self
        where = f"{self.name}/{self.split}: classes"
        index = torch.tensor(class_indices(self.class_names, class_names, where=where))
        return dataclasses.replace(
            self,
            labels=index[self.labels],
            class_names=class_names,
            split_recipe=f"{self.split_recipe}; labels renumbered by name to {list(class_names)}",
        )


def class_indices(names: Sequence[str], class_names: Sequence[str], *, where: str) -> list[int]:
    """The position of each of ``names`` in ``class_names``; a name that is not a class is an
    error naming it (``where`` says what ``names`` are)."""
    unknown = [name for name in names if name not in class_names]
    if unknown:
        raise ValueError(
            f"{where} {unknown} are not among the expected classes {list(class_names)}; "
            "a split may hold fewer classes than the model, never others"
        )
    return [list(class_names).index(name) for name in names]


def images_from_uint8(pixels: np.ndarray, *, channels_last: bool) -> torch.Tensor:
    """uint8 pixels (``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]``) → float32 / 255."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {pixels.dtype}")
    if pixels.ndim == 3:
        pixels = pixels[:, None, :, :]
    elif pixels.ndim == 4 and channels_last:
        pixels = pixels.transpose(0, 3, 1, 2)
    elif pixels.ndim != 4:
        raise ValueError(f"expected images of rank 3 or 4, got shape {pixels.shape}")
    return torch.from_numpy(np.ascontiguousarray(pixels)).to(torch.float32).div_(255.0)
