"""The additive skip ``x + f(x)``: the one place a HyCAS network may exceed 1."""

from __future__ import annotations

from fractions import Fraction

import torch

from models.layers.base import LipschitzModule, apply_layer
from models.layers.omega import OmegaSource
from models.lipschitz_bounds import ceil_to_float


class AdditiveSkip(LipschitzModule):
    """``x + f(x)``: the one place a HyCAS network may exceed 1.

    Bound: ``1 + L_f`` (triangle inequality).
    """

    def __init__(self, body: LipschitzModule) -> None:
        super().__init__()
        self.body = body
        self.draws_omega = getattr(body, "draws_omega", False)

    def forward(self, x: torch.Tensor, omega: OmegaSource | None = None) -> torch.Tensor:
        return x + apply_layer(self.body, x, omega)

    def lipschitz_bound(self) -> float:
        return ceil_to_float(Fraction(1) + Fraction(self.body.lipschitz_bound()))
