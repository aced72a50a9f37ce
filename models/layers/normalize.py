"""Input standardisation inside the model, so the certified bound covers it.

Radii are measured in the input space ``[0, 1]^{C×H×W}``. A per-channel ``(x − mean) / std``
multiplies distances by up to ``1 / min(std)``. The common factor ``1 / min(std)`` is left
out: a positive scalar gain changes neither which class wins nor any certified radius
(logit gaps and the Lipschitz bound scale together) but would inflate the stated bound.
What remains is ``(x − mean) · min(std) / std``, which keeps the channels' relative scales.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from models.layers.base import LipschitzModule


class Standardize(LipschitzModule):
    """``y_c = (x_c − mean_c) · min(std) / std_c``.

    Bound: ``max_c min(std) / std_c = 1`` (the float32 scale is checked ≤ 1).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if any(not 0 < s < math.inf for s in std):
            raise ValueError(f"std must be positive and finite in every channel, got {list(std)}")
        if any(not math.isfinite(m) for m in mean):
            raise ValueError(f"mean must be finite in every channel, got {list(mean)}")
        std_t = torch.tensor(list(std), dtype=torch.float64)
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("scale", (std_t.min() / std_t).float().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.scale

    def lipschitz_bound(self) -> float:
        return float(self.scale.detach().abs().max())

    def extra_repr(self) -> str:
        return f"channels={self.mean.shape[1]}"
