"""Norm-preserving resampling: invertible downsampling and scaled average pooling."""

from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F

from models.layers.base import LipschitzModule


class InvertibleDownsample(LipschitzModule):
    """Space-to-depth (pixel unshuffle) by ``factor``: a permutation of the coordinates.

    Bound: 1 (it is orthogonal, ``‖y‖₂ = ‖x‖₂``).
    """

    def __init__(self, factor: int) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"downsampling factor must be ≥ 1, got {factor}")
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(x, self.factor) if self.factor > 1 else x

    def lipschitz_bound(self) -> float:
        return 1.0

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class ScaledAvgPool2d(LipschitzModule):
    """Average pooling over non-overlapping ``k_h × k_w`` windows, times ``c ≈ √(k_h k_w)``.

    Plain averaging has norm ``1/√(k_h k_w)`` and would shrink every margin; the scale
    restores it. ``c`` is the float32 value rounded so that ``c² ≤ k_h k_w`` exactly.
    Bound: ``c / √(k_h k_w) ≤ 1`` (windows are disjoint, each window is a scaled sum).
    """

    def __init__(self, window: tuple[int, int]) -> None:
        super().__init__()
        kh, kw = int(window[0]), int(window[1])
        if kh < 1 or kw < 1:
            raise ValueError(f"pooling window must be positive, got {window}")
        self.window = (kh, kw)
        scale = torch.tensor(math.sqrt(kh * kw), dtype=torch.float32)
        while Fraction(float(scale)) ** 2 > kh * kw:
            scale = torch.nextafter(scale, torch.zeros_like(scale))
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window == (1, 1):
            return x
        return F.avg_pool2d(x, self.window) * self.scale

    def lipschitz_bound(self) -> float:
        return 1.0

    def extra_repr(self) -> str:
        return f"window={self.window}"
