"""Exact Clopper–Pearson confidence bounds for a binomial proportion.

For ``k`` successes in ``n`` independent trials with success probability ``p``, the one-sided
bounds at level ``alpha`` (Clopper & Pearson 1934) are the quantiles of beta distributions,

    lower = Beta⁻¹(alpha; k, n − k + 1)   (0 when k = 0)
    upper = Beta⁻¹(1 − alpha; k + 1, n − k)   (1 when k = n)

and satisfy ``P_k(lower > p) ≤ alpha`` and ``P_k(upper < p) ≤ alpha`` for every ``p``. They are
what Cohen et al. (2019) use for CERTIFY (their ``proportion_confint(..., method="beta")`` at
``2·alpha``). The float64 quantile is moved outwards by :mod:`certify.rounding`, so the
returned bound is at least as conservative as the exact one. The upper bound is the inverse
survival function at ``alpha`` (``beta.isf``), not the quantile at ``1 − alpha``: forming
``1 − alpha`` in float64 loses the low digits of a small ``alpha`` and, with them, enough
accuracy that ``beta.ppf(1 − alpha, …)`` can land on the wrong side of the exact bound by
more than the rounding margin (e.g. k = 3, n = 7, alpha ≈ 1.4·10⁻¹⁰).

The inverse is only the first guess: each bound is then checked against the binomial tail it
must satisfy, evaluated with the regularised incomplete beta function (``betainc`` /
``betaincc``, accurate to a few ulps, unlike its inverse, whose root finding gives up at
small levels: at alpha = 10⁻¹⁰⁰, k = 2, n = 25 it overstated the lower bound), at
``alpha·(1 − TAIL_CHECK_MARGIN)``. A guess that fails the check is replaced by the
tightest float64 that passes it, found by bisection over the floats.
"""

from __future__ import annotations

import math
import numbers
import struct
from collections.abc import Callable

from scipy.special import betainc, betaincc
from scipy.stats import beta

from certify.rounding import round_down, round_up
from certify.validation import MIN_BOUND_ALPHA, validate_alpha, validate_count


def _check(successes: int, trials: int, alpha: float) -> tuple[int, int, float]:
    trials = validate_count("trials", trials)
    if (
        isinstance(successes, bool)
        or not isinstance(successes, numbers.Integral)
        or not 0 <= int(successes) <= trials
    ):
        raise ValueError(f"successes must be an integer in [0, trials={trials}]; got {successes!r}")
    return int(successes), trials, validate_alpha(alpha, MIN_BOUND_ALPHA)


TAIL_CHECK_MARGIN = 1e-10
"""Relative room left under ``alpha`` when a bound's binomial tail is checked, far above the
error of the incomplete beta function and far below any statistical precision."""


def _bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x))[0]


def _float(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<q", bits))[0]


def _bisect_floats(passes: Callable[[float], bool], largest: bool) -> float:
    """The largest (``largest``) or smallest float64 in ``[0, 1]`` that ``passes``, for a test
    that holds on one side of a point (0 passes when ``largest``, 1 when not). Non-negative
    floats are ordered as their bit patterns, so this takes at most 64 evaluations."""
    low, high = 0, _bits(1.0)
    while low < high:
        if largest:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if passes(_float(middle)) else (low, middle - 1)
        else:
            middle = (low + high) // 2
            low, high = (low, middle) if passes(_float(middle)) else (middle + 1, high)
    return _float(low)


def _checked(guess: float, passes: Callable[[float], bool], largest: bool) -> float:
    """``guess`` when it is a float in ``[0, 1]`` that passes, else the bisection's bound."""
    if math.isfinite(guess) and 0.0 <= guess <= 1.0 and passes(guess):
        return guess
    return _bisect_floats(passes, largest)


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided lower bound: it exceeds the true ``p`` with probability ≤ ``alpha``, any ``p``.

    The returned ``lower`` satisfies ``P(Bin(n, lower) ≥ k) ≤ alpha·(1 − TAIL_CHECK_MARGIN)``
    as evaluated by ``betainc`` (the Clopper–Pearson condition, with room for its error).
    """
    successes, trials, alpha = _check(successes, trials, alpha)
    if successes == 0:
        return 0.0
    a, b = successes, trials - successes + 1
    level = alpha * (1.0 - TAIL_CHECK_MARGIN)

    def passes(p: float) -> bool:  # P(Bin(n, p) ≥ k) = I_p(k, n − k + 1)
        return bool(betainc(a, b, p) <= level)

    return _checked(max(0.0, round_down(beta.ppf(alpha, a, b))), passes, largest=True)


def clopper_pearson_upper(successes: int, trials: int, alpha: float) -> float:
    """One-sided upper bound: it is below the true ``p`` with probability ≤ ``alpha``, any ``p``.

    The returned ``upper`` satisfies ``P(Bin(n, upper) ≤ k) ≤ alpha·(1 − TAIL_CHECK_MARGIN)``
    as evaluated by ``betaincc`` (the Clopper–Pearson condition, with room for its error).
    """
    successes, trials, alpha = _check(successes, trials, alpha)
    if successes == trials:
        return 1.0
    a, b = successes + 1, trials - successes
    level = alpha * (1.0 - TAIL_CHECK_MARGIN)

    def passes(p: float) -> bool:  # P(Bin(n, p) ≤ k) = 1 − I_p(k + 1, n − k)
        return bool(betaincc(a, b, p) <= level)

    return _checked(min(1.0, round_up(beta.isf(alpha, a, b))), passes, largest=False)


def clopper_pearson_interval(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """Two-sided interval with coverage ``≥ 1 − alpha``: each side at level ``alpha / 2``."""
    return (
        clopper_pearson_lower(successes, trials, alpha / 2.0),
        clopper_pearson_upper(successes, trials, alpha / 2.0),
    )
