"""The frequency branch: orthonormal DCT, a learned mask in [0, 1], inverse DCT, 1×1 mixing.

With ``C_h``, ``C_w`` orthonormal DCT-II matrices, ``X ↦ C_hᵀ (M ⊙ (C_h X C_wᵀ)) C_w`` has
norm ``≤ ‖C_h‖² ‖C_w‖² max M ≤ 1``; the 1×1 mixing that follows is an AOL convolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.layers.aol import AOLConv2d
from models.layers.base import LipschitzModule, to_channels_last
from models.lipschitz_bounds import (
    float32_cast_margin,
    matrix_spectral_norm_bound,
    product_upper_bound,
)


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
    :func:`models.layers.fast_training` apply the same filter to channels-last maps (not
    certified; the bound is the one above).
    """

    def __init__(self, channels: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        h, w = int(input_size[0]), int(input_size[1])
        dct_h, self._norm_h = _float32_contraction(orthonormal_dct_matrix(h))
        dct_w, self._norm_w = _float32_contraction(orthonormal_dct_matrix(w))
        # Deterministic from the input size: not part of the saved state.
        self.register_buffer("dct_h", dct_h, persistent=False)
        self.register_buffer("dct_w", dct_w, persistent=False)
        # Start close to the identity filter (mask ≈ 0.88 everywhere).
        self.mask_logits = nn.Parameter(torch.full((h, w), 2.0))
        self.mix = AOLConv2d(channels, channels, kernel_size=1, bias=False)

    def mask(self) -> torch.Tensor:
        return torch.sigmoid(self.mask_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.takes_training_shortcuts():
            return self.mix(self._channels_last_filter(x))
        spectrum = self.dct_h @ x @ self.dct_w.T
        filtered = self.dct_h.T @ (self.mask() * spectrum) @ self.dct_w
        return self.mix(filtered)

    def weighted_training_output(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``weight · self(x)`` with the weight folded into the 1×1 mixing kernel (the filter is
        linear): no full-size product, forward or backward (a training step's shortcut)."""
        if not self.takes_training_shortcuts():
            return weight * self(x)
        mix = self.mix
        bias = None if mix.bias is None else weight * mix.bias
        return F.conv2d(
            self._channels_last_filter(x),
            weight * mix.training_kernel(),
            bias,
            stride=mix.stride,
            padding=mix.kernel_size // 2,
        )

    def _channels_last_filter(self, x: torch.Tensor) -> torch.Tensor:
        """The same filter on the channels-last layout ``[B, H, W, C]`` that the training
        shortcuts' convolutions prefer: each 1-D transform is a product over the rows of
        ``[B·H, W, C]`` or ``[B, H, W·C]``, and the result stays channels-last for the 1×1
        mixing (a training step's shortcut)."""
        b, c, h, w = x.shape
        pixels = to_channels_last(x).permute(0, 2, 3, 1)
        spectrum = torch.matmul(self.dct_w, pixels.reshape(b * h, w, c))
        spectrum = torch.matmul(self.dct_h, spectrum.view(b, h, w * c)).view(b, h, w, c)
        filtered = spectrum * self.mask().view(1, h, w, 1)
        filtered = torch.matmul(self.dct_h.T, filtered.view(b, h, w * c))
        filtered = torch.matmul(self.dct_w.T, filtered.view(b * h, w, c))
        return filtered.view(b, h, w, c).permute(0, 3, 1, 2)

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
