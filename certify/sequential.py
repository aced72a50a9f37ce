"""A sequential, anytime-valid test of "is the smoothed classifier certified at radius r?".

Certified at ``r`` means ``g(x') = c`` for every ``‖x' − x‖₂ < r``; by Cohen et al. (2019),
Theorem 1, this holds when ``p_c = P[f(x + ε; Ω) = c] ≥ θ = Φ(r/σ)``. The test chooses
``c`` with ``n0`` selection samples, then adds estimation samples until a checkpoint of the
geometric schedule ``64, 128, 256, …, max_samples`` at which the one-sided Clopper–Pearson
bounds at level ``alpha / J`` (``J`` checkpoints) decide:

- ``lower ≥ θ`` → certified;
- ``upper < θ`` → not certified: ``p_c < θ``, so Theorem 1 cannot certify ``r`` for ``c``
  (this does not exhibit an adversarial example; and if the ``n0`` samples chose a class
  that is not the most likely one, another class might still be certifiable);
- neither at ``max_samples`` → undecided.

A union bound over the ``J`` checkpoints makes every bound hold at once with probability
``≥ 1 − alpha``. The checkpoints are fixed before sampling and the ``n0`` selection samples
are independent of the estimation samples, so for whichever ``c`` is chosen, both claims
above are wrong with probability ``≤ alpha`` whatever the stopping time (only one of them
can be wrong for a given ``p_c``); easy inputs stop after a few hundred samples instead of
``max_samples``. For a float64 ``x``, sampling is centred at ``float32(x)`` and ``r`` is
replaced by ``r + ‖x − float32(x)‖₂`` in ``θ``, so that the claim holds around ``x``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import torch
from scipy.special import ndtr

from certify.clopper_pearson import clopper_pearson_lower, clopper_pearson_upper
from certify.noisy_run import NoisyRunParameters
from certify.result import CertificationResult
from certify.rounding import round_down, round_up
from certify.sampling import CancellationCheck, ProgressCallback
from certify.validation import validate_count, validate_radius

FIRST_CHECKPOINT = 64
"""Estimation samples at the first look; with p_c = 1 this decides radii up to about σ."""


class RadiusDecision(enum.StrEnum):
    """The answer of :func:`certify_at_radius`."""

    CERTIFIED = "certified"
    NOT_CERTIFIED = "not_certified"
    UNDECIDED = "undecided"


@dataclass(frozen=True)
class RadiusTestResult(CertificationResult):
    """The decision of the sequential test, with the bounds and samples that produced it."""

    decision: RadiusDecision
    label: int
    """The class tested (chosen by the ``n0`` selection samples); certified when ``decision`` is."""
    radius: float
    """The target L2 radius in the ``[0, 1]`` input space of shape ``input_shape``."""
    threshold: float
    """``Φ((radius + input_rounding) / σ)``: the vote probability the label needs."""
    p_lower: float
    p_upper: float
    """Clopper–Pearson bounds at level ``alpha_per_checkpoint`` at the last look."""
    votes: int
    estimation_samples: int
    """Votes for ``label`` out of the estimation samples at the last look."""
    samples: int
    """Forward passes used: ``n0`` plus the estimation samples."""
    checkpoints: tuple[int, ...]
    alpha_per_checkpoint: float
    sigma: float
    alpha: float
    n0: int
    max_samples: int
    batch_size: int
    seed: int
    input_shape: tuple[int, ...]
    input_rounding: float
    """A bound on ``‖x − float32(x)‖₂`` (0 unless ``x`` is float64); added to the radius."""
    device: str
    torch_version: str


def geometric_checkpoints(max_samples: int) -> tuple[int, ...]:
    """Estimation sample counts at which the test looks: doubling, ending at ``max_samples``."""
    checkpoints = []
    step = FIRST_CHECKPOINT
    while step < max_samples:
        checkpoints.append(step)
        step *= 2
    checkpoints.append(max_samples)
    return tuple(checkpoints)


def certify_at_radius(
    model: Any,
    x: Any,
    radius: float,
    *,
    sigma: float,
    alpha: float = 0.001,
    max_samples: int = 100_000,
    batch_size: int = 1000,
    seed: int | None = None,
    n0: int = 100,
    progress: ProgressCallback | None = None,
    should_cancel: CancellationCheck | None = None,
) -> RadiusTestResult:
    """Decide whether the smoothed classifier at ``x`` is certified at L2 radius ``radius``.

    Guarantee: with probability at least ``1 − alpha``, whatever the stopping time, a
    ``certified`` answer means ``g(x') = label`` for every ``‖x' − x‖₂ < radius`` and a
    ``not_certified`` answer means ``P[f(x + ε; Ω) = label] < Φ(radius/σ)`` (for a float64
    ``x``: at ``float32(x)``, with ``radius + input_rounding``); this assumes,
    as :func:`certify.smoothing_certify` does, Ω independent of the input and votes not
    steered by float32 rounding of the noisy inputs (the bounds and ``Φ(r/σ)`` are float64
    and rounded towards the conservative side).

    ``progress`` reports ``(samples_done, n0 + max_samples)``; the run usually stops early.
    """
    run = NoisyRunParameters.validate(x, sigma=sigma, alpha=alpha, batch_size=batch_size, seed=seed)
    radius = validate_radius(radius)
    max_samples = validate_count("max_samples", max_samples)
    n0 = validate_count("n0", n0)

    checkpoints = geometric_checkpoints(max_samples)
    alpha_per_checkpoint = run.alpha / len(checkpoints)
    needed = radius if run.input_rounding == 0.0 else round_up(radius + run.input_rounding)
    threshold = float(ndtr(needed / run.sigma))
    sampler = run.sampler(model, n0 + max_samples, progress, should_cancel)
    label = int(sampler.count(n0).argmax())

    counts: torch.Tensor | None = None
    estimation_samples = 0
    decision = RadiusDecision.UNDECIDED
    for checkpoint in checkpoints:
        fresh = sampler.count(checkpoint - estimation_samples)
        counts = fresh if counts is None else counts + fresh
        estimation_samples = checkpoint
        votes = int(counts[label])  # one host read per checkpoint, not per batch
        p_lower = clopper_pearson_lower(votes, estimation_samples, alpha_per_checkpoint)
        p_upper = clopper_pearson_upper(votes, estimation_samples, alpha_per_checkpoint)
        if p_lower >= round_up(threshold):
            decision = RadiusDecision.CERTIFIED
            break
        if p_upper < round_down(threshold):
            decision = RadiusDecision.NOT_CERTIFIED
            break

    return RadiusTestResult(
        decision=decision,
        label=label,
        radius=radius,
        threshold=threshold,
        p_lower=p_lower,
        p_upper=p_upper,
        votes=votes,
        estimation_samples=estimation_samples,
        samples=sampler.samples_done,
        checkpoints=checkpoints,
        alpha_per_checkpoint=alpha_per_checkpoint,
        n0=n0,
        max_samples=max_samples,
        input_rounding=run.input_rounding,
        **run.recorded(sampler),
    )
