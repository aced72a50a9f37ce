"""Randomized smoothing: Cohen et al. (2019) CERTIFY and PREDICT for a randomized base classifier.

The smoothed classifier of a base classifier ``f(·; Ω)`` at noise level ``σ`` is

    g(x) = argmax_c  P_{ε ~ N(0, σ² I), Ω}[ f(x + ε; Ω) = c ].

If ``P[f(x + ε; Ω) = c_A] ≥ p_A ≥ 1/2`` then ``g(x + δ) = c_A`` for every ``‖δ‖₂ < σ Φ⁻¹(p_A)``
(Cohen, Rosenfeld & Kolter 2019, Theorem 1, with ``p_B = 1 − p_A``). This holds for a
randomized ``f`` as long as Ω does not depend on the input: conditioned on Ω the theorem
applies, and the probabilities are averages over Ω. Sampling is streamed by
:class:`certify.sampling.NoisyVoteSampler`.

Floating point: ``p_lower`` and the radius are computed in float64 and rounded down
(:mod:`certify.rounding`); the noisy inputs are float32, and the guarantee assumes the
model's votes do not depend on their rounding (Voráček & Hein 2023; see
:mod:`certify.sampling`). Sampling is centred at ``float32(x)``; for a float64 ``x`` the
radius is reduced by ``‖x − float32(x)‖₂`` so that it holds around ``x`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scipy.special import ndtri
from scipy.stats import binomtest

from certify.clopper_pearson import clopper_pearson_lower
from certify.noisy_run import NoisyRunParameters, counts_tuple
from certify.result import CertificationResult
from certify.rounding import round_down, round_up
from certify.sampling import CancellationCheck, ProgressCallback
from certify.validation import radius_around_input, validate_count


@dataclass(frozen=True)
class SmoothingCertificate(CertificationResult):
    """The outcome of CERTIFY: a label with a certified L2 radius, or an abstention."""

    label: int | None
    """The certified class of the smoothed classifier; ``None`` when abstaining."""
    abstained: bool
    radius: float
    """Certified L2 radius around ``x`` in the ``[0, 1]`` input space of ``input_shape``; 0 when
    abstaining. It is the radius at ``float32(x)`` less ``input_rounding``."""
    p_lower: float
    """One-sided Clopper–Pearson lower bound on ``P[f(x + ε; Ω) = candidate]`` at level alpha."""
    candidate: int
    """The class chosen by the ``n0`` selection samples (the one whose probability is bounded)."""
    counts: tuple[int, ...]
    """Votes per class over the ``n`` estimation samples."""
    selection_counts: tuple[int, ...]
    """Votes per class over the ``n0`` selection samples."""
    samples: int
    """Forward passes used: ``n0 + n``."""
    sigma: float
    n0: int
    n: int
    alpha: float
    batch_size: int
    seed: int
    input_shape: tuple[int, ...]
    input_rounding: float
    """A bound on ``‖x − float32(x)‖₂`` (0 unless ``x`` is float64); subtracted from the radius."""
    device: str
    torch_version: str
    """Replaying ``seed`` reproduces the counts on the same device, torch version and batch size."""


@dataclass(frozen=True)
class SmoothingPrediction(CertificationResult):
    """The outcome of PREDICT: the smoothed classifier's label, or an abstention."""

    label: int | None
    """The predicted class of the smoothed classifier; ``None`` when abstaining."""
    abstained: bool
    p_value: float
    """Two-sided binomial test of the top two vote counts against 1/2."""
    counts: tuple[int, ...]
    samples: int
    sigma: float
    n: int
    alpha: float
    batch_size: int
    seed: int
    input_shape: tuple[int, ...]
    device: str
    torch_version: str


def gaussian_smoothing_radius(p_lower: float, sigma: float) -> float:
    """``σ Φ⁻¹(p_lower)`` in float64, rounded down; the certified radius for ``p_lower ≥ 1/2``."""
    return round_down(sigma * float(ndtri(p_lower)))


def smoothing_certify(
    model: Any,
    x: Any,
    *,
    sigma: float,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    seed: int | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancellationCheck | None = None,
) -> SmoothingCertificate:
    """Cohen et al.'s CERTIFY: a label and an L2 radius for the smoothed classifier at ``x``.

    Guarantee: with probability at least ``1 − alpha`` over the sampling, if a label is
    returned then the smoothed classifier ``g`` (noise ``N(0, σ² I)``, the model's Ω averaged)
    returns that label at every ``x'`` with ``‖x' − x‖₂ < radius``; this assumes Ω is drawn
    independently of the input and that the float32 rounding of the noisy inputs does not
    steer the model (``p_lower`` and the radius themselves are float64, rounded down; a
    float64 ``x`` is sampled around ``float32(x)`` and the radius reduced by their distance).

    ``n0`` samples choose the candidate class, ``n`` fresh samples count its votes ``k``;
    ``p_lower`` is the one-sided Clopper–Pearson bound of ``k / n`` at level ``alpha`` and
    the radius is ``σ Φ⁻¹(p_lower)``; the result abstains when ``p_lower < 1/2``. ``seed``
    (drawn fresh and recorded when ``None``) fixes every random draw; ``progress`` and
    ``should_cancel`` are called between batches (see :mod:`certify.sampling`).
    """
    run = NoisyRunParameters.validate(x, sigma=sigma, alpha=alpha, batch_size=batch_size, seed=seed)
    n0 = validate_count("n0", n0)
    n = validate_count("n", n)
    sampler = run.sampler(model, n0 + n, progress, should_cancel)
    selection_counts = sampler.count(n0)
    candidate = int(selection_counts.argmax())
    counts = counts_tuple(sampler.count(n))
    p_lower = clopper_pearson_lower(counts[candidate], n, run.alpha)
    abstained = p_lower < 0.5
    radius = 0.0 if abstained else gaussian_smoothing_radius(p_lower, run.sigma)
    return SmoothingCertificate(
        label=None if abstained else candidate,
        abstained=abstained,
        radius=radius_around_input(radius, run.input_rounding),
        p_lower=p_lower,
        candidate=candidate,
        counts=counts,
        selection_counts=counts_tuple(selection_counts),
        samples=sampler.samples_done,
        n0=n0,
        n=n,
        input_rounding=run.input_rounding,
        **run.recorded(sampler),
    )


def smoothing_predict(
    model: Any,
    x: Any,
    *,
    sigma: float,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    seed: int | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancellationCheck | None = None,
) -> SmoothingPrediction:
    """Cohen et al.'s PREDICT: the smoothed classifier's label at ``x``, or an abstention.

    Guarantee: the probability of returning a label other than ``g(x)`` is at most ``alpha``
    (Hung et al. 2019, via Cohen et al. 2019, Theorem 2), under the same assumptions as
    :func:`smoothing_certify` (Ω independent of the input, float32 rounding of the noisy
    inputs not steering the model; the p-value is compared after rounding it up). A float64
    ``x`` is predicted at ``float32(x)``: the label is that of ``g(float32(x))``.

    ``n`` samples are drawn; with ``n_A ≥ n_B`` the two largest vote counts, the label is
    returned when the two-sided binomial test of ``n_A`` out of ``n_A + n_B`` against 1/2
    (``scipy.stats.binomtest``) has a p-value ≤ ``alpha``.
    """
    run = NoisyRunParameters.validate(x, sigma=sigma, alpha=alpha, batch_size=batch_size, seed=seed)
    n = validate_count("n", n)
    sampler = run.sampler(model, n, progress, should_cancel)
    counts = counts_tuple(sampler.count(n))
    ranked = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    top = ranked[0]
    top_votes = counts[top]
    runner_up_votes = counts[ranked[1]] if len(ranked) > 1 else 0
    p_value = float(binomtest(top_votes, top_votes + runner_up_votes, 0.5).pvalue)
    abstained = round_up(p_value) > run.alpha
    return SmoothingPrediction(
        label=None if abstained else top,
        abstained=abstained,
        p_value=p_value,
        counts=counts,
        samples=sampler.samples_done,
        n=n,
        **run.recorded(sampler),
    )
