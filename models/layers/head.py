"""The classification head: a row-normalised linear layer with a certified spectral norm.

Normalising the rows makes every logit 1-Lipschitz, but the map to all K logits can still
reach ``√K``. The rows are therefore also divided by the exact spectral norm of the
row-normalised matrix (float64 SVD of a small ``K × D`` matrix, not power iteration).
Training steps divide by :func:`largest_singular_value` instead: matrix products only, so a
training step can be captured whole in a CUDA graph (cuSOLVER's SVD cannot be).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.layers.base import LipschitzModule
from models.lipschitz_bounds import float32_cast_margin, matrix_spectral_norm_bound


def largest_singular_value(matrix: torch.Tensor, squarings: int = 12) -> torch.Tensor:
    """``σ_max`` of a ``K × D`` matrix with few rows, from matrix products alone (no SVD, no
    host synchronisation), differentiable; for training steps, never for a bound.

    The Gram matrix ``G = M Mᵀ`` (``K × K``, in float32 at least, autocast or not) is squared
    ``squarings`` times (rescaled as often as its range needs), which leaves ``G^(2^s)``
    pointing along the top eigenvector ``v``; its column of largest norm is that vector, and
    ``σ_max² = vᵀ G v / vᵀ v`` (the Rayleigh quotient, with ``v`` held constant, so the
    gradient is ``∂σ/∂M = v vᵀ M / (σ vᵀ v)``, the exact one when the top singular value is
    simple).

    Guarantee: never above the true ``σ_max`` (a Rayleigh quotient, up to rounding), and below
    it by at most a relative ``1 / (2^(s+2) e)`` of ``σ_max²`` in the worst case (top
    eigenvalues closer than a factor ``1 − 2^-(s+1)``; 2.2·10⁻⁵ for ``s = 12``), by float32
    rounding when they differ by 1 % or more.
    """
    rows = matrix.shape[0]
    dtype = torch.promote_types(matrix.dtype, torch.float32)
    # A PSD matrix's largest entry is at most its top eigenvalue, which is at most K times it:
    # rescaled to a largest entry of 1, it can grow K^(2^t)-fold in t squarings. Rescale often
    # enough to stay within the dtype's range (every 4th squaring for K = 10 in float32).
    headroom = math.log(torch.finfo(dtype).max) / 2
    every = max(1, int(math.log2(headroom / math.log(rows)))) if rows > 1 else squarings
    with torch.autocast(matrix.device.type, enabled=False):  # float32 at least, under autocast
        matrix = matrix.to(dtype)
        gram = matrix @ matrix.T
        with torch.no_grad():
            power = gram.detach()
            for squaring in range(squarings):
                if squaring % every == 0:
                    power = power / power.abs().amax()
                power = power @ power
            column = power.norm(dim=0).argmax().view(1)
            v = power.index_select(1, column).squeeze(1)
        return ((v @ gram @ v) / (v @ v)).sqrt()


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
        """``R / σ_max(R)`` in the weight's dtype, without the cast margin, ``σ_max`` by
        :func:`largest_singular_value`: a training step's shortcut
        (:func:`models.layers.fast_training`), never certified."""
        rows = self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return rows / largest_singular_value(rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.takes_training_shortcuts():
            return nn.functional.linear(x, self.training_weight(), self.bias)
        return nn.functional.linear(x, self.cached_when_frozen(self.effective_weight), self.bias)

    def lipschitz_bound(self) -> float:
        return matrix_spectral_norm_bound(self.effective_weight().detach())

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}"
