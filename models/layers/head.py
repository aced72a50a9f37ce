"""The classification head: a row-normalised linear layer with a certified spectral norm.

Normalising the rows makes every logit 1-Lipschitz, but the map to all K logits can still
reach ``√K``. The rows are therefore also divided by the exact spectral norm of the
row-normalised matrix (float64 SVD of a small ``K × D`` matrix, not power iteration).
"""

from __future__ import annotations

import torch
from torch import nn

from models.layers.base import LipschitzModule
from models.lipschitz_bounds import float32_cast_margin, matrix_spectral_norm_bound


class NormalizedLinear(LipschitzModule):
    """``y = W_eff x + b`` with ``W_eff = R / σ_max(R)``, ``R`` = ``W`` with unit-norm rows.

    Bound: the certified float64 spectral norm of the float32 ``W_eff`` in use (≤ 1).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / in_features**0.5)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self._shrink = 1.0 - float32_cast_margin(1, out_features, in_features)

    def effective_weight(self) -> torch.Tensor:
        w = self.weight.double()
        rows = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sigma = torch.linalg.matrix_norm(rows, ord=2)
        return (rows * (self._shrink / sigma)).to(self.weight.dtype)

    def training_weight(self) -> torch.Tensor:
        """``R / σ_max(R)`` in the weight's dtype, without the cast margin: a training step's
        shortcut (:func:`models.layers.fast_training`), never certified."""
        rows = self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return rows / torch.linalg.matrix_norm(rows, ord=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.takes_training_shortcuts():
            return nn.functional.linear(x, self.training_weight(), self.bias)
        return nn.functional.linear(x, self.cached_when_frozen(self.effective_weight), self.bias)

    def lipschitz_bound(self) -> float:
        return matrix_spectral_norm_bound(self.effective_weight().detach())

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}"
