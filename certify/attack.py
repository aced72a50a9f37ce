"""Minimum-norm L2 attacks: an empirical UPPER bound next to each certified LOWER bound.

A certified radius ``r`` says no input closer than ``r`` changes the answer; an attack that
finds an input ``x'`` with another answer at ``‖x' − x‖₂ = D`` says the true robust radius is
at most ``D``. Together they bracket it: ``certified ≤ true robust radius ≤ found``. A found
distance below a certified radius of the same classifier would prove one of them wrong, which
is how the tests use these attacks.

- :func:`margin_attack` attacks the deterministic classifier of the margin certificate, the
  frozen ensemble ``F_K(x) = mean_k s(x; Ω_k)`` built exactly as
  :func:`certify.margin_certify` builds it (same seeds, same float64 mean), with DDN
  (Rony et al. 2019, "Decoupling Direction and Norm"): a normalized-gradient step on the
  logit margin, then a projection onto an L2 sphere whose radius shrinks by ``γ`` while the
  iterate is adversarial and grows by ``γ`` while it is not; the best adversarial iterate is
  then pulled towards ``x`` by bisection along its perturbation. Iterates stay in ``[0, 1]``.
- :func:`smoothing_attack` attacks the smoothed classifier ``g`` of randomized smoothing:
  DDN on its soft version ``G(x) = E_{ε,Ω}[softmax f(x + ε; Ω)]`` estimated from ``m`` noisy
  samples per step with fresh noise and Ω (expectation over transformation, as in SmoothAdv,
  Salman et al. 2019), then PREDICT (:func:`certify.smoothing_predict`) to confirm: a point
  is reported only if a PREDICT run seeded after the point was chosen returns another class.

Both are seeded (the result records the seed and replays on the same device and torch
version), bounded (``max_queries`` model evaluations; ``max_seconds``), report progress in
queries, and stop with :class:`certify.CertificationCancelled` when ``should_cancel`` says so.
No maintained attack library fits here: torchattacks needs torchvision (which does not import
beside the CPU build of torch used here) and ART's attacks materialise their inputs and are a
heavy dependency; DDN is short enough to state in full below.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from certify.margin import frozen_ensemble_logits, frozen_omega_seeds
from certify.result import CertificationResult
from certify.rounding import round_up
from certify.sampling import (
    CancellationCheck,
    CertificationCancelled,
    ProgressCallback,
    check_logits,
    is_stochastic,
    model_device,
    require_ieee_float32,
)
from certify.seeds import derive_seeds
from certify.smoothing import smoothing_predict
from certify.validation import (
    MIN_ALPHA,
    validate_alpha,
    validate_count,
    validate_image,
    validate_seed,
    validate_sigma,
)

DDN_GAMMA = 0.05
"""DDN's relative change of the sphere radius per step (Rony et al. 2019 use 0.05)."""

BISECTION_STEPS = 12
"""Bisection steps that pull the best adversarial point of :func:`margin_attack` towards x."""


@dataclass(frozen=True)
class AttackResult(CertificationResult):
    """The closest input with another answer that an attack found (``None`` fields: none).

    ``distance`` is an upper bound on the classifier's true L2 robust radius at ``x`` (for
    :func:`smoothing_attack`, with probability at least ``1 − alpha`` over the confirming
    PREDICT run); it is NOT a certificate.
    """

    classifier: str
    """``frozen_ensemble`` (F_K of the margin certificate) or ``smoothed`` (g)."""
    label: int | None
    """The classifier's answer at ``x`` (``None``: the smoothed classifier abstains at x)."""
    label_found: int | None
    distance: float | None
    """``‖x' − x‖₂`` in float64, rounded up; ``None`` when no other answer was found."""
    queries: int
    """Model evaluations spent (one input through the model, with or without a gradient)."""
    max_queries: int
    steps: int
    restarts: int
    seed: int
    seconds: float
    stopped: str
    """``found``, ``not_found`` (every step ran), ``budget`` (queries) or ``time_limit``."""
    input_shape: tuple[int, ...]
    device: str
    ensemble: int | None = None
    omega_seeds: tuple[int, ...] = ()
    sigma: float | None = None
    alpha: float | None = None
    samples_per_step: int | None = None
    predict_n: int | None = None
    p_value: float | None = None
    """The two-sided p-value of the confirming PREDICT run (smoothed classifier only)."""
    adversarial: torch.Tensor | None = dataclasses.field(default=None, repr=False)
    """The input found, float32 ``[C, H, W]`` on the CPU (not part of :meth:`to_dict`)."""

    def to_dict(self) -> dict[str, Any]:
        fields = super().to_dict()
        del fields["adversarial"]
        return fields


class _Budget:
    """Queries, wall time, progress and cancellation of one attack run."""

    def __init__(
        self,
        max_queries: int,
        max_seconds: float | None,
        progress: ProgressCallback | None,
        should_cancel: CancellationCheck | None,
    ) -> None:
        self.max_queries = max_queries
        self.queries = 0
        self.started = time.perf_counter()
        self.deadline = None if max_seconds is None else self.started + max_seconds
        self.progress = progress
        self.should_cancel = should_cancel

    def exhausted(self, next_queries: int) -> str | None:
        """Why the next ``next_queries`` evaluations may not run (``None``: they may)."""
        if self.should_cancel is not None and self.should_cancel():
            raise CertificationCancelled(self.queries)
        if self.queries + next_queries > self.max_queries:
            return "budget"
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            return "time_limit"
        return None

    def spend(self, queries: int) -> None:
        self.queries += queries
        if self.progress is not None:
            self.progress(min(self.queries, self.max_queries), self.max_queries)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def recorded(self) -> dict[str, Any]:
        """The result fields that account for the run: queries spent and allowed, seconds."""
        return {"queries": self.queries, "max_queries": self.max_queries, "seconds": self.seconds}


def _unit(vectors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each row divided by its L2 norm; a zero row becomes a random unit direction."""
    flat = vectors.flatten(1)
    norms = flat.norm(dim=1, keepdim=True)
    dead = norms.squeeze(1) == 0
    if bool(dead.any()):
        random = torch.randn(
            (int(dead.sum()), flat.shape[1]), generator=generator, device=flat.device
        ).to(flat.dtype)
        flat = flat.clone()
        flat[dead] = random
        norms = flat.norm(dim=1, keepdim=True)
    return (flat / norms).view_as(vectors)


def _project(x: torch.Tensor, delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """``delta`` rescaled to L2 norm ``radius`` per row, then clipped so ``x + delta ∈ [0, 1]``."""
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    scaled = delta * (radius / norms).view(-1, *([1] * (delta.ndim - 1)))
    return (x + scaled).clamp(0.0, 1.0) - x


def _margins(logits: torch.Tensor, label: int) -> torch.Tensor:
    """``z_label − max_{j ≠ label} z_j`` per row: negative exactly when another class wins."""
    others = logits.clone()
    others[:, label] = -math.inf
    return logits[:, label] - others.max(dim=1).values


@dataclass(frozen=True)
class _DdnSettings:
    """DDN's settings for one attack: ``restarts`` starts, ``steps`` steps each, the first
    step size ``initial_norm``."""

    steps: int
    restarts: int
    initial_norm: float

    @classmethod
    def validate(cls, steps: Any, restarts: Any, initial_norm: float) -> _DdnSettings:
        steps = validate_count("steps", steps)
        return cls(steps, validate_count("restarts", restarts), initial_norm)


def _ddn(
    x: torch.Tensor,
    margin_of: Callable[[torch.Tensor], torch.Tensor],
    settings: _DdnSettings,
    queries_per_point: int,
    generator: torch.Generator,
    budget: _Budget,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """DDN from ``restarts`` starts: the best adversarial perturbation per restart (``[R, ...]``,
    ``inf`` norm where none was found), their norms, and why the loop ended.

    ``margin_of(points)`` returns a differentiable margin per point that is negative when the
    point is adversarial; it costs ``queries_per_point`` model evaluations per point. Restart 0
    starts at ``x``; the others at random points of the sphere of radius ``initial_norm / 2``.
    Step sizes follow DDN's cosine schedule from ``initial_norm`` down to 0.
    """
    restarts, steps, initial_norm = settings.restarts, settings.steps, settings.initial_norm
    queries_per_step = restarts * queries_per_point
    shape = (restarts, *x.shape)
    delta = torch.zeros(shape, dtype=x.dtype, device=x.device)
    if restarts > 1:
        start = torch.randn((restarts - 1, *x.shape), generator=generator, device=x.device)
        radius = torch.full((restarts - 1,), initial_norm / 2, device=x.device)
        delta[1:] = _project(x, _unit(start.to(x.dtype), generator), radius)
    radius = torch.full((restarts,), initial_norm, dtype=x.dtype, device=x.device)
    best = torch.zeros_like(delta)
    best_norm = torch.full((restarts,), math.inf, dtype=torch.float64, device=x.device)
    stopped = "not_found"
    for step in range(steps):
        reason = budget.exhausted(queries_per_step)
        if reason is not None:
            stopped = reason
            break
        delta.requires_grad_(True)
        with torch.enable_grad():
            margins = margin_of(x + delta)
            (gradient,) = torch.autograd.grad(margins.sum(), delta)
        budget.spend(queries_per_step)
        delta = delta.detach()
        margins = margins.detach()
        adversarial = margins < 0
        norms = delta.flatten(1).norm(dim=1).to(torch.float64)
        improved = adversarial & (norms < best_norm)
        best[improved] = delta[improved]
        best_norm = torch.where(improved, norms, best_norm)
        step_size = initial_norm * 0.5 * (1.0 + math.cos(math.pi * step / steps))
        delta = delta - step_size * _unit(gradient, generator)
        factor = torch.where(adversarial, 1.0 - DDN_GAMMA, 1.0 + DDN_GAMMA).to(x.dtype)
        radius = radius * factor
        delta = _project(x, delta, radius)
    return best, best_norm, stopped


def _distance(point: torch.Tensor, image: torch.Tensor) -> float:
    """``‖point − image‖₂`` in float64, rounded up (the reported ``distance``)."""
    return round_up(float((point.to(torch.float64) - image.to(torch.float64)).norm()))


class _Run:
    """What both attacks record about one run, and the one place their results are made."""

    def __init__(
        self, ddn: _DdnSettings, budget: _Budget, image: torch.Tensor, device: torch.device
    ) -> None:
        self.ddn = ddn
        self.budget = budget
        self.image = image
        self.device = device

    def result(
        self,
        *,
        classifier: str,
        label: int | None,
        seed: int,
        stopped: str,
        adversarial: torch.Tensor | None = None,
        label_found: int | None = None,
        **classifier_fields: Any,
    ) -> AttackResult:
        """The result of the run: ``adversarial`` (on the CPU; ``None``: nothing found) with
        its distance from the image; ``classifier_fields`` are the attack's own settings."""
        return AttackResult(
            classifier=classifier,
            label=label,
            label_found=label_found,
            distance=None if adversarial is None else _distance(adversarial, self.image),
            seed=seed,
            stopped=stopped,
            adversarial=adversarial,
            steps=self.ddn.steps,
            restarts=self.ddn.restarts,
            input_shape=tuple(self.image.shape),
            device=str(self.device),
            **self.budget.recorded(),
            **classifier_fields,
        )


def margin_attack(
    model: Any,
    x: Any,
    *,
    ensemble: int = 1,
    seed: int | None = 0,
    attack_seed: int | None = None,
    steps: int = 200,
    restarts: int = 4,
    initial_norm: float = 1.0,
    max_queries: int = 100_000,
    max_seconds: float | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancellationCheck | None = None,
) -> AttackResult:
    """The closest input to ``x`` that DDN finds where the frozen ensemble ``F_K`` changes label.

    ``F_K`` is the classifier :func:`certify.margin_certify` certifies with the same
    ``ensemble`` and ``seed``: the mean logits of K frozen draws Ω_k with seeds derived from
    ``seed`` (one run of a deterministic model). ``attack_seed`` seeds the restarts.

    Guarantee: when ``label_found`` is set, ``argmax F_K(adversarial) = label_found ≠ label``,
    checked by an exact re-evaluation of ``F_K`` in float64 (the margin certificate's
    arithmetic), and ``‖adversarial − x‖₂ ≤ distance``: so the true robust radius of ``F_K``
    at ``x`` is at most ``distance``. It is an upper bound only: not finding a point says
    nothing. Queries count each input through the model once per frozen draw.
    """
    image = validate_image(x)
    ensemble = validate_count("ensemble", ensemble)
    seed = validate_seed(seed)
    attack_seed = validate_seed(seed if attack_seed is None else attack_seed)
    ddn = _DdnSettings.validate(steps, restarts, initial_norm)
    max_queries = validate_count("max_queries", max_queries)
    omega_seeds = frozen_omega_seeds(model, ensemble, seed)
    device = model_device(model)
    require_ieee_float32(device)
    draws = max(1, len(omega_seeds))
    budget = _Budget(max_queries, max_seconds, progress, should_cancel)
    generator = torch.Generator(device=device).manual_seed(attack_seed)
    x_device = image.to(device)

    def labels_of(points: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return frozen_ensemble_logits(model, points, omega_seeds).argmax(dim=1)

    if max_queries < draws:
        raise ValueError(f"max_queries={max_queries} cannot pay for one evaluation of F_K")
    label = int(labels_of(x_device.unsqueeze(0))[0])
    budget.spend(draws)

    def margin_of(points: torch.Tensor) -> torch.Tensor:
        logits = frozen_ensemble_logits(model, points.to(torch.float32), omega_seeds)
        return _margins(logits, label)

    best, best_norm, stopped = _ddn(x_device, margin_of, ddn, draws, generator, budget)
    found = torch.isfinite(best_norm)
    adversarial: torch.Tensor | None = None
    label_found: int | None = None
    if bool(found.any()):
        candidates = best[found]
        # Bisection along each perturbation: t·δ is adversarial at hi, not (known) at lo.
        lo = torch.zeros(candidates.shape[0], dtype=torch.float64, device=device)
        hi = torch.ones_like(lo)
        for _ in range(BISECTION_STEPS):
            if budget.exhausted(candidates.shape[0] * draws) is not None:
                break
            middle = (lo + hi) / 2
            points = x_device + middle.to(x_device.dtype).view(-1, 1, 1, 1) * candidates
            flipped = labels_of(points) != label
            budget.spend(candidates.shape[0] * draws)
            hi = torch.where(flipped, middle, hi)
            lo = torch.where(flipped, lo, middle)
        points = (x_device + hi.to(x_device.dtype).view(-1, 1, 1, 1) * candidates).clamp(0, 1)
        # The final check: exactly the classifier of the margin certificate, one point at a time.
        labels = torch.stack([labels_of(point.unsqueeze(0))[0] for point in points])
        budget.spend(points.shape[0] * draws)
        distances = (points.to(torch.float64) - image.to(device, torch.float64)).flatten(1)
        distances = distances.norm(dim=1)
        distances[labels == label] = math.inf
        index = int(distances.argmin())
        if math.isfinite(float(distances[index])):
            adversarial = points[index].detach().cpu()
            label_found = int(labels[index])
            stopped = "found"
    return _Run(ddn, budget, image, device).result(
        classifier="frozen_ensemble",
        label=label,
        seed=attack_seed,
        stopped=stopped,
        adversarial=adversarial,
        label_found=label_found,
        ensemble=ensemble,
        omega_seeds=omega_seeds,
    )


def smoothing_attack(
    model: Any,
    x: Any,
    *,
    sigma: float,
    label: int | None = None,
    alpha: float = 0.001,
    samples_per_step: int = 16,
    steps: int = 100,
    restarts: int = 1,
    initial_norm: float = 1.0,
    predict_n: int = 10_000,
    batch_size: int = 1000,
    refine_steps: int = 6,
    seed: int | None = None,
    max_queries: int = 200_000,
    max_seconds: float | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancellationCheck | None = None,
) -> AttackResult:
    """The closest input to ``x`` found where the smoothed classifier ``g`` answers otherwise.

    ``label`` is ``g(x)`` as a certificate found it (default: PREDICT at ``x`` with
    ``predict_n`` samples; if it abstains, nothing is attacked and ``label`` is ``None``).
    DDN runs on the soft smoothed classifier with ``samples_per_step`` noisy samples per
    restart and step (fresh noise ``N(0, σ² I)`` and fresh Ω per sample); the smallest
    perturbation whose Monte-Carlo estimate changed class gives a direction, along which the
    distance is bracketed and bisected (``refine_steps``) with PREDICT runs of ``predict_n``
    samples. The chosen point is then confirmed by one more PREDICT run with a seed derived
    after it was chosen.

    Guarantee: when ``label_found`` is set, that confirming run returned ``label_found ≠
    label``; PREDICT returns a class other than ``g(x')`` with probability at most ``alpha``
    (:func:`certify.smoothing_predict`), so with probability at least ``1 − alpha``,
    ``g(adversarial) ≠ label`` and the true robust radius of ``g`` at ``x`` is at most
    ``distance`` — under PREDICT's assumptions, and given that ``label`` is ``g(x)``. It is
    an upper bound only: not finding a point says nothing.
    """
    image = validate_image(x)
    sigma = validate_sigma(sigma)
    alpha = validate_alpha(alpha)
    samples_per_step = validate_count("samples_per_step", samples_per_step)
    ddn = _DdnSettings.validate(steps, restarts, initial_norm)
    predict_n = validate_count("predict_n", predict_n)
    batch_size = validate_count("batch_size", batch_size)
    max_queries = validate_count("max_queries", max_queries)
    seed = validate_seed(seed)
    device = model_device(model)
    require_ieee_float32(device)
    budget = _Budget(max_queries, max_seconds, progress, should_cancel)
    attack_seed, noise_seed, omega_seed, predict_seed = derive_seeds(seed, 4)
    generator = torch.Generator(device=device).manual_seed(attack_seed)
    noise = torch.Generator(device=device).manual_seed(noise_seed)
    omega = torch.Generator(device=device).manual_seed(omega_seed) if is_stochastic(model) else None
    predict_seeds = iter(derive_seeds(predict_seed, 4 * (refine_steps + 8)))
    x_device = image.to(device)

    def predict(point: torch.Tensor, level: float = alpha) -> tuple[int | None, float]:
        """PREDICT at ``point`` at ``level``; its label (``None``: abstained) and p-value."""
        result = smoothing_predict(
            model,
            point,
            sigma=sigma,
            n=predict_n,
            alpha=level,
            batch_size=batch_size,
            seed=next(predict_seeds),
            should_cancel=should_cancel,
        )
        budget.spend(result.samples)
        return result.label, result.p_value

    def result(**fields: Any) -> AttackResult:
        return _Run(ddn, budget, image, device).result(
            classifier="smoothed",
            label=label,
            seed=seed,
            sigma=sigma,
            alpha=alpha,
            samples_per_step=samples_per_step,
            predict_n=predict_n,
            **fields,
        )

    if label is None:
        if max_queries < predict_n:
            raise ValueError(f"max_queries={max_queries} cannot pay for PREDICT at x")
        label, _ = predict(x_device)
        if label is None:
            return result(stopped="not_found")

    def margin_of(points: torch.Tensor) -> torch.Tensor:
        noisy = points.repeat_interleave(samples_per_step, dim=0)
        noisy = noisy + sigma * torch.randn(
            noisy.shape, generator=noise, device=device, dtype=noisy.dtype
        )
        logits = model(noisy) if omega is None else model(noisy, generator=omega)
        logits = check_logits(logits, noisy.shape[0])
        soft = torch.softmax(logits.to(torch.float64), dim=1)
        soft = soft.view(points.shape[0], samples_per_step, -1).mean(dim=1)
        return _margins(torch.log(soft.clamp_min(1e-300)), label)

    best, best_norm, stopped = _ddn(x_device, margin_of, ddn, samples_per_step, generator, budget)
    if not bool(torch.isfinite(best_norm).any()):
        return result(stopped=stopped)
    direction = _unit(best[int(best_norm.argmin())].unsqueeze(0), generator)[0]
    start = float(best_norm.min())

    def point_at(norm: float) -> torch.Tensor:
        return (x_device + norm * direction).clamp(0.0, 1.0)

    # Bracket: grow the distance until PREDICT returns another class, then bisect. These
    # exploratory runs use a level ten times stricter than alpha, so the point they settle on
    # is far enough past the boundary for the independent confirmation at alpha to pass.
    explore = max(alpha / 10, MIN_ALPHA)
    hi: float | None = None
    lo = 0.0
    norm = start
    for _ in range(4):
        if budget.exhausted(predict_n) is not None:
            break
        found, _ = predict(point_at(norm), explore)
        if found is not None and found != label:
            hi = norm
            break
        lo = norm
        norm *= 1.5
    if hi is None:
        reason = budget.exhausted(predict_n)
        return result(stopped=reason or "not_found")
    for _ in range(refine_steps):
        if budget.exhausted(2 * predict_n) is not None:  # keep one run for the confirmation
            break
        middle = (lo + hi) / 2
        found, _ = predict(point_at(middle), explore)
        if found is not None and found != label:
            hi = middle
        else:
            lo = middle
    if budget.exhausted(predict_n) is not None:
        return result(stopped="budget")
    adversarial = point_at(hi)
    confirmed, p_value = predict(adversarial)
    if confirmed is None or confirmed == label:
        return result(stopped="not_found", p_value=p_value)
    adversarial = adversarial.detach().cpu()
    return result(
        label_found=confirmed,
        stopped="found",
        p_value=p_value,
        adversarial=adversarial,
    )
