"""Flattening a feature map to a vector: a reshape, bound 1."""

from __future__ import annotations

import torch

from models.layers.base import LipschitzModule


class Flatten(LipschitzModule):
    """``[B, C, H, W] → [B, C·H·W]``. Bound: 1 (a reshape)."""

    constant_bound = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)
