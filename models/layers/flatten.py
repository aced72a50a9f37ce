"""Flattening a feature map to a vector: a reshape, bound 1."""

from __future__ import annotations

import torch

from models.layers.base import LipschitzModule


class Flatten(LipschitzModule):
    """``[B, C, H, W] → [B, C·H·W]``. Bound: 1 (a reshape)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def lipschitz_bound(self) -> float:
        return 1.0
