"""Clopper–Pearson bounds against statsmodels and closed forms."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
from statsmodels.stats.proportion import proportion_confint

from certify import clopper_pearson_interval, clopper_pearson_lower, clopper_pearson_upper

GRID = [
    (k, n)
    for n in (1, 2, 7, 100, 1000, 100_000)
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n})
    if 0 <= k <= n
]


@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05, 0.25])
@pytest.mark.parametrize(("k", "n"), GRID)
def test_one_sided_bounds_match_statsmodels_two_sided_at_twice_alpha(k, n, alpha):
    lower, upper = proportion_confint(k, n, alpha=2 * alpha, method="beta")
    assert clopper_pearson_lower(k, n, alpha) == pytest.approx(lower, rel=1e-9, abs=1e-300)
    assert clopper_pearson_upper(k, n, alpha) == pytest.approx(upper, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(("k", "n"), GRID)
def test_interval_is_the_two_one_sided_bounds_at_half_alpha(k, n):
    assert clopper_pearson_interval(k, n, 0.02) == (
        clopper_pearson_lower(k, n, 0.01),
        clopper_pearson_upper(k, n, 0.01),
    )


@pytest.mark.parametrize("n", [1, 10, 1000, 100_000])
def test_closed_forms_at_the_ends(n):
    alpha = 0.001
    assert clopper_pearson_lower(0, n, alpha) == 0.0
    assert clopper_pearson_upper(n, n, alpha) == 1.0
    # All successes: the lower bound solves p**n = alpha; no successes: (1 − p)**n = alpha.
    assert clopper_pearson_lower(n, n, alpha) == pytest.approx(alpha ** (1 / n), rel=1e-10)
    assert clopper_pearson_upper(0, n, alpha) == pytest.approx(1 - alpha ** (1 / n), rel=1e-10)


def _binomial_tail(n: int, p: float, successes: range) -> Fraction:
    """``P(Bin(n, p) ∈ successes)`` in exact rational arithmetic (a float is a dyadic rational)."""
    q = Fraction(p)
    return sum(math.comb(n, j) * q**j * (1 - q) ** (n - j) for j in successes)


# 1.388…e-10 and 9.926…e-09 are levels at which the quantile at 1 − alpha falls on the
# wrong side of the exact upper bound (the low digits of alpha are lost in 1 − alpha).
@pytest.mark.parametrize(
    "alpha", [0.2, 0.001, 9.92684743440209e-09, 1.3883315658587056e-10, 1e-100, 1e-200]
)
@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 12, 16, 25])
def test_bounds_hold_in_exact_arithmetic(n, alpha):
    """The defining tail inequalities, checked exactly: P(Bin(n, lower) ≥ k) ≤ alpha, etc."""
    level = Fraction(alpha)
    for k in range(n + 1):
        if k > 0:
            lower = clopper_pearson_lower(k, n, alpha)
            assert _binomial_tail(n, lower, range(k, n + 1)) <= level, (k, lower)
        if k < n:
            upper = clopper_pearson_upper(k, n, alpha)
            assert _binomial_tail(n, upper, range(k + 1)) <= level, (k, upper)


@pytest.mark.parametrize("alpha", [1e-3, 1e-30, 1e-100, 1e-200])
def test_lower_bound_holds_exactly_near_all_successes_at_small_levels(alpha):
    """Where certificates live (k close to n), down to the smallest level accepted."""
    n = 1000
    for k in (n, n - 1, n - 5, n - 40):
        lower = clopper_pearson_lower(k, n, alpha)
        assert _binomial_tail(n, lower, range(k, n + 1)) <= Fraction(alpha), (k, lower)


@pytest.mark.parametrize("n", [1, 10, 1000, 100_000])
def test_bounds_are_rounded_outwards(n):
    """The returned bound is never less conservative than the float64 closed form."""
    alpha = 0.001
    assert clopper_pearson_lower(n, n, alpha) < math.exp(math.log(alpha) / n)
    assert clopper_pearson_upper(0, n, alpha) > -math.expm1(math.log(alpha) / n)


def test_bounds_are_monotone_in_successes_and_bracket_the_estimate():
    n = 500
    lowers = [clopper_pearson_lower(k, n, 0.001) for k in range(n + 1)]
    uppers = [clopper_pearson_upper(k, n, 0.001) for k in range(n + 1)]
    assert all(a < b for a, b in itertools.pairwise(lowers))
    assert all(a < b for a, b in itertools.pairwise(uppers))
    assert all(lo <= k / n <= up for k, (lo, up) in enumerate(zip(lowers, uppers, strict=True)))


@pytest.mark.parametrize(
    ("k", "n", "alpha", "message"),
    [
        (-1, 10, 0.01, "successes"),
        (11, 10, 0.01, "successes"),
        (2.5, 10, 0.01, "successes"),
        (1, 0, 0.01, "trials"),
        (1, 10, 0.0, "alpha"),
        (1, 10, 0.5, "alpha"),
        (1, 10, 1e-300, "not checked to be sound"),
    ],
)
def test_bad_arguments_are_refused(k, n, alpha, message):
    with pytest.raises(ValueError, match=message):
        clopper_pearson_lower(k, n, alpha)
