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
"""

from __future__ import annotations

import numbers

from scipy.stats import beta

from certify.rounding import round_down, round_up
from certify.validation import validate_alpha, validate_count


def _check(successes: int, trials: int, alpha: float) -> tuple[int, int, float]:
    trials = validate_count("trials", trials)
    if (
        isinstance(successes, bool)
        or not isinstance(successes, numbers.Integral)
        or not 0 <= int(successes) <= trials
    ):
        raise ValueError(f"successes must be an integer in [0, trials={trials}]; got {successes!r}")
    return int(successes), trials, validate_alpha(alpha)


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided lower bound: it exceeds the true ``p`` with probability ≤ ``alpha``, any ``p``."""
    successes, trials, alpha = _check(successes, trials, alpha)
    if successes == 0:
        return 0.0
    return max(0.0, round_down(beta.ppf(alpha, successes, trials - successes + 1)))


def clopper_pearson_upper(successes: int, trials: int, alpha: float) -> float:
    """One-sided upper bound: it is below the true ``p`` with probability ≤ ``alpha``, any ``p``."""
    successes, trials, alpha = _check(successes, trials, alpha)
    if successes == trials:
        return 1.0
    return min(1.0, round_up(beta.isf(alpha, successes + 1, trials - successes)))


def clopper_pearson_interval(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """Two-sided interval with coverage ``≥ 1 − alpha``: each side at level ``alpha / 2``."""
    return (
        clopper_pearson_lower(successes, trials, alpha / 2.0),
        clopper_pearson_upper(successes, trials, alpha / 2.0),
    )
