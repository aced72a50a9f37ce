"""Architectures by name: how a model card's ``architecture`` and ``config`` rebuild a network."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from models.baselines import build_lipschitz_baseline, build_plain_cnn
from models.hycas import build_hycas
from models.onnx_classifier import build_onnx_classifier
from models.protocol import CertifiableModel

ARCHITECTURES: dict[str, Callable[..., CertifiableModel]] = {
    "hycas": build_hycas,
    "cnn": build_plain_cnn,
    "onnx": build_onnx_classifier,
}
"""Architectures a card can name; each builder takes ``(input_shape, num_classes, **config)``."""

TRAINABLE_ARCHITECTURES: dict[str, Callable[..., CertifiableModel]] = {
    "hycas": build_hycas,
    "cnn": build_plain_cnn,
    "lipschitz": build_lipschitz_baseline,
}
"""What ``hycas train --architecture`` accepts (``onnx`` is imported, not trained:
``hycas models import``); ``lipschitz`` is saved as ``hycas`` with its
random parts switched off in the config."""


def build_model(
    architecture: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    config: Mapping[str, Any] | None = None,
    *,
    trainable: bool = False,
) -> CertifiableModel:
    """A fresh network of ``architecture``; ``trainable=True`` also accepts the aliases of
    :data:`TRAINABLE_ARCHITECTURES`."""
    builders = TRAINABLE_ARCHITECTURES if trainable else ARCHITECTURES
    if architecture not in builders:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(builders)}")
    return builders[architecture](tuple(input_shape), num_classes, **dict(config or {}))
