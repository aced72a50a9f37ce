"""Checks on what callers pass in: every refusal is a ``ValueError`` that says what to change."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

from certify.rounding import round_down
from certify.seeds import SEED_BITS, fresh_seed

MIN_SIGMA = 1e-4
"""Smallest smoothing noise accepted: float32 rounding of ``x + ε`` must stay far below σ.

A noisy value in ``[0, 2)`` is rounded by up to ``2⁻²⁴ ≈ 6·10⁻⁸``; at σ = 10⁻⁸ that hides
most of the noise (the model mostly sees ``x`` itself) and the certified radius overstates
the true one even for a linear classifier. At σ ≥ 10⁻⁴ the rounding is below ``6·10⁻⁴·σ``.
"""

NORM_ROUNDING_FACTOR = 1.0 + 2.0**-20
"""Covers the float64 error of an L2 norm of up to 2**32 terms (at most ``n·2⁻⁵³`` relative)."""


def validate_image(x: Any) -> torch.Tensor:
    """One image ``[C, H, W]`` with finite values in ``[0, 1]``, returned as float32.

    Accepts a ``torch.Tensor`` (any device) or anything ``torch.as_tensor`` reads, such as a
    NumPy array. Integer images are refused rather than rescaled: the radius is measured in
    the ``[0, 1]`` input space and a silent ``/ 255`` would change its meaning.
    """
    if isinstance(x, torch.Tensor):
        tensor = x.detach()
    else:
        try:
            tensor = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as error:
            message = f"x must be an image tensor [C, H, W]; got {type(x).__name__}"
            raise ValueError(message) from error
    if tensor.ndim != 3:
        raise ValueError(
            f"x must be one image [C, H, W]; got shape {tuple(tensor.shape)} "
            "(certify one image at a time; drop a leading batch dimension of 1)"
        )
    if tensor.numel() == 0:
        raise ValueError(f"x is empty: shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(
            f"x must be a floating-point image with values in [0, 1]; got dtype {tensor.dtype} "
            "(convert it, e.g. divide 8-bit pixels by 255, before certifying)"
        )
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError("x contains NaN or infinite values")
    low, high = float(tensor.min()), float(tensor.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"x must have values in [0, 1]; got values in [{low:.6g}, {high:.6g}]")
    return tensor.to(torch.float32)


def float32_rounding_offset(x: Any, image: torch.Tensor) -> float:
    """An upper bound on ``‖x − image‖₂``, the distance from the caller's input to its float32 copy.

    Certificates are computed at ``image = float32(x)``; a radius ``R`` there holds at ``x``
    only for ``R − ‖x − image‖₂`` (triangle inequality), so the certificates subtract this.
    It is zero for float32, float16 and bfloat16 inputs, and about ``3·10⁻⁸·√d`` at most for a
    float64 image of ``d`` values in ``[0, 1]``. The difference of a float64 and its float32
    rounding is exact; the norm is moved up by ``NORM_ROUNDING_FACTOR``.
    """
    original = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if original.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return 0.0
    difference = original.to(torch.float64) - image.to(original.device, torch.float64)
    return float(torch.linalg.vector_norm(difference)) * NORM_ROUNDING_FACTOR


def radius_around_input(radius: float, input_rounding: float) -> float:
    """A radius certified around ``float32(x)``, made to hold around ``x`` itself.

    With ``input_rounding ≥ ‖x − float32(x)‖₂`` (:func:`float32_rounding_offset`), the
    triangle inequality leaves ``radius − input_rounding`` around ``x``; it is rounded down
    and never below 0. An exact float32 input (``input_rounding == 0``) keeps its radius.
    """
    if radius > 0.0 and input_rounding > 0.0:
        return max(0.0, round_down(radius - input_rounding))
    return radius


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number; got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite; got {number}")
    return number


def validate_sigma(sigma: Any) -> float:
    """The standard deviation of the smoothing noise: finite and ≥ ``MIN_SIGMA``."""
    number = _real("sigma", sigma)
    if number <= 0.0:
        raise ValueError(f"sigma must be > 0; got {number}")
    if number < MIN_SIGMA:
        raise ValueError(
            f"sigma must be >= {MIN_SIGMA:g}; got {number:g} (float32 rounding of the noisy "
            "inputs would hide noise this small and make the certificate unsound)"
        )
    return number


MIN_ALPHA = 1e-100
"""The smallest failure probability a certificate accepts. SciPy's inverse beta function is
checked against exact binomial tails (tests/certify/test_clopper_pearson.py) down to 1e-200,
the floor of :data:`MIN_BOUND_ALPHA`; near the float64 underflow (1e-300) it is not accurate
enough for a sound Clopper–Pearson bound. 1e-100 leaves room for the sequential test's split
of alpha."""

MIN_BOUND_ALPHA = 1e-200
"""The smallest level the Clopper–Pearson functions accept (see :data:`MIN_ALPHA`)."""


def validate_alpha(alpha: Any, minimum: float = MIN_ALPHA) -> float:
    """A failure probability in ``[minimum, 0.5)`` (``minimum`` defaults to 1e-100)."""
    number = _real("alpha", alpha)
    if not 0.0 < number < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5); got {number}")
    if number < minimum:
        raise ValueError(
            f"alpha={number:g} is below {minimum:g}, where the binomial bounds are not "
            "checked to be sound"
        )
    return number


def validate_radius(radius: Any) -> float:
    """A target L2 radius: finite and ≥ 0."""
    number = _real("radius", radius)
    if number < 0.0:
        raise ValueError(f"radius must be >= 0; got {number}")
    return number


def validate_lipschitz(lipschitz: Any, source: str) -> float:
    """A Lipschitz bound: finite and > 0; ``source`` names where it came from in the message."""
    number = _real(f"the Lipschitz bound ({source})", lipschitz)
    if number <= 0.0:
        raise ValueError(f"the Lipschitz bound ({source}) must be > 0; got {number}")
    return number


def validate_count(name: str, value: Any) -> int:
    """A positive integer count such as ``n``, ``n0``, ``batch_size`` or ``ensemble``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    if int(value) < 1:
        raise ValueError(f"{name} must be >= 1; got {int(value)}")
    return int(value)


def validate_seed(seed: Any) -> int:
    """An integer seed in ``[0, 2**63)``; ``None`` draws a fresh one (results record it)."""
    if seed is None:
        return fresh_seed()
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer or None; got {seed!r}")
    if not 0 <= int(seed) < 2**SEED_BITS:
        raise ValueError(f"seed must lie in [0, 2**{SEED_BITS}); got {int(seed)}")
    return int(seed)
