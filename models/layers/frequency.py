"""The frequency branch: orthonormal DCT, a learned mask in [0, 1], inverse DCT, 1×1 mixing.

With ``C_h``, ``C_w`` orthonormal DCT-II matrices, ``X ↦ C_hᵀ (M ⊙ (C_h X C_wᵀ)) C_w`` has
norm ``≤ ‖C_h‖² ‖C_w‖² max M ≤ 1``; the 1×1 mixing that follows is an AOL convolution.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.layers.aol import AOLConv2d
from models.layers.base import LipschitzModule
from models.lipschitz_bounds import (
    float32_cast_margin,
    matrix_spectral_norm_bound,
    product_upper_bound,
)

DENSE_DCT_MAX_SIZE = 144
"""Largest ``H·W`` whose training steps apply the 2-D DCT filter as one dense matrix."""


def orthonormal_dct_matrix(n: int) -> torch.Tensor:
    """The float64 ``n × n`` orthonormal DCT-II matrix ``C`` (``C Cᵀ = I``)."""
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    i = torch.arange(n, dtype=torch.float64).view(1, -1)
    c = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c


def _float32_contraction(matrix: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``matrix`` (norm 1) shrunk so its float32 rounding keeps a certified norm ≤ 1."""
    n = matrix.shape[0]
    rounded = (matrix * (1.0 - float32_cast_margin(1, n, n))).float()
    bound = matrix_spectral_norm_bound(rounded)
    if bound > 1.0:
        raise ArithmeticError(f"float32 DCT matrix has norm bound {bound} > 1")
    return rounded, bound


class FrequencyFilter(LipschitzModule):
    """DCT → mask ``sigmoid(θ)`` ∈ [0, 1] per frequency → inverse DCT → AOL 1×1 mixing.

    Bound: ``‖C_h‖² · ‖C_w‖² · max(mask) · 1`` with the matrix norms certified in float64 for
    the float32 matrices used (each ≤ 1). Training steps inside
    :func:`models.layers.fast_training` on maps of at most :data:`DENSE_DCT_MAX_SIZE` pixels
    apply the same filter as one dense matrix (not certified; the bound is the one above).
    """

    def __init__(self, channels: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        h, w = int(input_size[0]), int(input_size[1])
        dct_h, self._norm_h = _float32_contraction(orthonormal_dct_matrix(h))
        dct_w, self._norm_w = _float32_contraction(orthonormal_dct_matrix(w))
        # Deterministic from the input size: not part of the saved state.
        self.register_buffer("dct_h", dct_h, persistent=False)
        self.register_buffer("dct_w", dct_w, persistent=False)
        # Training steps on small maps: the 2-D DCT as one (HW × HW) matrix, C_h ⊗ C_w.
        dense = torch.kron(dct_h, dct_w) if h * w <= DENSE_DCT_MAX_SIZE else None
        self.register_buffer("dct_hw", dense, persistent=False)
        # Start close to the identity filter (mask ≈ 0.88 everywhere).
        self.mask_logits = nn.Parameter(torch.full((h, w), 2.0))
        self.mix = AOLConv2d(channels, channels, kernel_size=1, bias=False)

    def mask(self) -> torch.Tensor:
        return torch.sigmoid(self.mask_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dct_hw is not None and self.takes_training_shortcuts():
            return self.mix(self._dense_filter(x))
        spectrum = self.dct_h @ x @ self.dct_w.T
        filtered = self.dct_h.T @ (self.mask() * spectrum) @ self.dct_w
        return self.mix(filtered)

    def _dense_filter(self, x: torch.Tensor) -> torch.Tensor:
        """The same filter as one product with ``(C_h ⊗ C_w)ᵀ diag(mask) (C_h ⊗ C_w)`` over
        every image and channel (a training step's shortcut on small maps, where many tiny
        batched products cost more than one larger one)."""
        b, c, h, w = x.shape
        operator = (self.dct_hw.T * self.mask().reshape(1, -1)) @ self.dct_hw
        return (x.reshape(b * c, h * w) @ operator.T).reshape(b, c, h, w)

    def lipschitz_bound(self) -> float:
        max_mask = float(self.mask().detach().max())
        return product_upper_bound(
            (
                self._norm_h,
                self._norm_h,
                self._norm_w,
                self._norm_w,
                max_mask,
                self.mix.lipschitz_bound(),
            )
        )
