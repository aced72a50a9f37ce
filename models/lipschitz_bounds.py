"""Certified numeric bounds used by the Lipschitz layers.

Everything here is computed in float64 from the float32 values a layer actually uses, by
methods that give upper bounds (never power iteration, which approaches the spectral norm
from below). The guarantee of each function is stated in its docstring; "exact arithmetic"
means the bound is for the real-number function defined by the stored float32 parameters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction

import numpy as np
import torch

FLOAT32_UNIT_ROUNDOFF = 2.0**-24
"""Relative error of rounding a real number to the nearest float32."""

FLOAT64_SVD_SLACK = 1e-10
"""Relative slack added to float64 SVD and FFT results: LAPACK's singular values carry a
backward error of a small multiple of 1e-16 times the matrix norm, far below this."""


def float32_cast_margin(taps: int, rows: int, cols: int) -> float:
    """Relative shrink factor that keeps a norm-≤1 operator norm-≤1 after a float32 cast.

    A convolution kernel with ``taps`` spatial taps of ``rows × cols`` matrices, each of
    operator norm ≤ 1, is rounded to float32 with elementwise relative error ≤ u = 2⁻²⁴. The
    error operator has norm ≤ Σ_taps ‖E_tap‖_F ≤ taps · u · √min(rows, cols). Scaling the
    float64 kernel by ``1 − δ`` with ``δ = 2 · taps · u · √min(rows, cols)`` before the cast
    keeps the rounded operator's norm ≤ (1 − δ)(1 + δ/2) < 1.
    """
    return 2.0 * taps * FLOAT32_UNIT_ROUNDOFF * math.sqrt(min(rows, cols))


def matrix_spectral_norm_bound(matrix: torch.Tensor | np.ndarray) -> float:
    """Certified upper bound on the spectral norm of a (possibly batched) matrix.

    Computed by a float64 SVD of the exact float64 promotion of ``matrix``, plus a relative
    slack of :data:`FLOAT64_SVD_SLACK`. For a batch ``[..., m, n]`` the maximum is returned.
    """
    a = torch.as_tensor(matrix).detach().to(device="cpu", dtype=torch.float64)
    if a.numel() == 0:
        return 0.0
    sigma = torch.linalg.svdvals(a).max().item()
    return sigma * (1.0 + FLOAT64_SVD_SLACK)


def conv_operator_norm_bound(
    kernel: torch.Tensor | np.ndarray, input_size: tuple[int, int]
) -> float:
    """Certified upper bound on ‖conv_K‖₂ for a zero-padded 2-D convolution on ``input_size``.

    ``kernel`` has shape ``[c_out, c_in, k_h, k_w]``; any zero padding ≤ k − 1 and any stride
    ≥ 1 are covered. The zero-padded operator is a restriction (zero embedding, then a crop)
    of the circular convolution on an ``N_h × N_w`` torus with ``N ≥ n + k − 1``, so its norm
    is at most the circular one, which the 2-D DFT block-diagonalises exactly:
    ``‖circ_K‖₂ = max_ω σ_max(K̂(ω))`` over the ``N_h · N_w`` DFT frequencies (Sedghi, Gupta
    & Long 2019, "The singular values of convolutional layers"). Striding subsamples the
    output and can only lower the norm. Computed in float64; see :data:`FLOAT64_SVD_SLACK`.
    """
    k = torch.as_tensor(kernel).detach().to(device="cpu", dtype=torch.float64)
    if k.ndim != 4:
        raise ValueError(f"kernel must be [c_out, c_in, k_h, k_w], got shape {tuple(k.shape)}")
    _, _, kh, kw = k.shape
    n_h = input_size[0] + kh - 1
    n_w = input_size[1] + kw - 1
    spectrum = torch.fft.fft2(k, s=(n_h, n_w))  # [c_out, c_in, N_h, N_w], complex128
    blocks = spectrum.permute(2, 3, 0, 1)  # one c_out × c_in matrix per frequency
    sigma = torch.linalg.svdvals(blocks).max().item()
    # The FFT adds a rounding error of O(log N · 1e-16 · Σ|K|); bound it explicitly.
    fft_error = 8.0 * math.log2(n_h * n_w) * 2.0**-53 * k.abs().sum().item()
    return sigma * (1.0 + FLOAT64_SVD_SLACK) + fft_error


def product_upper_bound(factors: Iterable[float]) -> float:
    """The product of non-negative floats, rounded up: an upper bound on the exact product.

    The product is formed exactly in rational arithmetic and only the final conversion to
    float rounds, upwards, so a chain of bounds never loses its certificate to rounding.
    """
    exact = Fraction(1)
    for f in factors:
        if not (f >= 0.0 and math.isfinite(f)):
            raise ValueError(f"a Lipschitz bound must be finite and non-negative, got {f}")
        exact *= Fraction(f)
    return ceil_to_float(exact)


def ceil_to_float(value: Fraction) -> float:
    """The smallest float ≥ ``value``."""
    f = float(value)
    if Fraction(f) < value:
        f = math.nextafter(f, math.inf)
    return f


def convex_weights(logits: torch.Tensor) -> torch.Tensor:
    """Softmax weights whose values sum to at most 1 in exact arithmetic.

    A float32 softmax can sum to 1 + a few ulps (and a float64 sum of the weights can round
    such an excess away); a convex combination must not exceed 1, or a chain of "1-Lipschitz"
    gates drifts above 1. The sum is formed exactly; when it exceeds 1 the largest weight is
    lowered to the largest number of its dtype that brings the sum to ≤ 1 (a constant
    correction, so gradients are those of the softmax). The check reads the weights on the
    host: layers call this once per parameter update (see ``cached_when_frozen``).
    """
    w = torch.softmax(logits, dim=0)
    values = w.detach().cpu().tolist()
    if sum((Fraction(v) for v in values), Fraction(0)) <= 1:
        return w
    i = max(range(len(values)), key=values.__getitem__)
    room = 1 - sum((Fraction(v) for j, v in enumerate(values) if j != i), Fraction(0))
    lowered = torch.tensor(float(room), dtype=w.dtype)
    while Fraction(float(lowered)) > room:
        lowered = torch.nextafter(lowered, torch.zeros_like(lowered))
    correction = torch.zeros_like(w)
    correction[i] = w.detach()[i] - lowered.to(w.device)
    return w - correction
