"""The baselines HyCAS is compared with on equal training budgets (docs/results.md).

- :class:`PlainCNN`: an unconstrained convolutional network, trained with Gaussian noise and
  certified by randomized smoothing only — the setting of Cohen, Rosenfeld & Kolter (2019). It
  has no Lipschitz bound, so it has no margin certificate.
- :func:`build_lipschitz_baseline`: the same Lipschitz network as HyCAS without its random
  parts (no random-projection branch, no attention noise), so Ω has no effect and the network
  is deterministic; it is certified by its Lipschitz margin (and can be smoothed as well).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from models.card import Normalization
from models.hycas import HyCAS, build_hycas
from models.protocol import (
    CertifiableModel,
    DeterministicModel,
    describe_network,
)

LIPSCHITZ_BASELINE_OPTIONS: dict[str, Any] = {
    "random_projection": False,
    "attention_temperature": 0.0,
    "attention_noise_std": 0.0,
}
"""HyCAS config options that remove every random part of the network."""


def build_lipschitz_baseline(
    input_shape: tuple[int, int, int], num_classes: int, **config: Any
) -> HyCAS:
    """HyCAS without random projections and attention noise (``config`` may override the rest)."""
    clashes = sorted(set(config) & set(LIPSCHITZ_BASELINE_OPTIONS))
    if clashes:
        raise ValueError(f"the Lipschitz baseline fixes {clashes}; do not pass them")
    return build_hycas(input_shape, num_classes, **LIPSCHITZ_BASELINE_OPTIONS, **config)


@dataclasses.dataclass(frozen=True)
class PlainCNNConfig:
    """Architecture of :class:`PlainCNN` besides the input shape and classes."""

    width: int = 32
    """Channels of the first two convolutions; the next two have twice as many."""
    hidden: int = 128
    """Width of the hidden fully connected layer."""
    mean: tuple[float, ...] | None = None
    """Per-channel mean subtracted inside the model (default 0.5 per channel)."""
    std: tuple[float, ...] | None = None
    """Per-channel std divided inside the model (default 0.5 per channel)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class PlainCNN(DeterministicModel, nn.Module, CertifiableModel):
    """``normalize → (conv 3×3, ReLU) ×2 → max-pool 2 → (conv 3×3, ReLU) ×2 → avg-pool to 4×4
    → linear → ReLU → linear``: a classifier with no Lipschitz constraint and no internal
    randomness. As a :class:`models.protocol.CertifiableModel` it is not ``stochastic`` (its
    ``generator``, ``omega_seed`` and ``frozen`` have no effect) and its
    ``lipschitz_bound()`` is ``None``."""

    def __init__(
        self, input_shape: tuple[int, int, int], num_classes: int, config: PlainCNNConfig
    ) -> None:
        super().__init__()
        c, h, w = (int(d) for d in input_shape)
        if min(h, w) < 8:
            raise ValueError(f"PlainCNN needs inputs of at least 8×8, got {h}×{w}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be ≥ 2, got {num_classes}")
        self.input_shape = (c, h, w)
        self.num_classes = int(num_classes)
        self.config = config
        mean = config.mean if config.mean is not None else (0.5,) * c
        std = config.std if config.std is not None else (0.5,) * c
        if len(mean) != c or len(std) != c or any(not s > 0 for s in std):
            raise ValueError(f"mean and std need {c} entries and a positive std, got {mean}, {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1))
        width = config.width
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 16, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, num_classes),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features((x - self.mean) / self.std))

    def normalization(self) -> Normalization:
        return Normalization(
            mean=tuple(float(v) for v in self.mean.flatten()),
            scale=tuple(float(v) for v in (1.0 / self.std).flatten()),
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary in the shape of :meth:`models.HyCAS.describe` (no bound)."""
        return describe_network(self, "cnn", self.config.to_dict())


def build_plain_cnn(input_shape: tuple[int, int, int], num_classes: int, **config: Any) -> PlainCNN:
    """A :class:`PlainCNN`; unknown config options raise ``ValueError``."""
    fields = {f.name for f in dataclasses.fields(PlainCNNConfig)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ValueError(f"unknown PlainCNN config option(s) {unknown}; valid: {sorted(fields)}")
    for key in ("mean", "std"):
        if config.get(key) is not None:
            config[key] = tuple(config[key])
    return PlainCNN(tuple(input_shape), num_classes, PlainCNNConfig(**config))  # type: ignore[arg-type]
