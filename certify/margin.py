"""The Lipschitz margin certificate of a deterministic (or frozen-ensemble) classifier.

If the logit map ``z: R^d → R^K`` is ``L``-Lipschitz in L2, every difference ``z_i − z_j`` is
``√2·L``-Lipschitz (``|⟨e_i − e_j, z(x) − z(x')⟩| ≤ √2 ‖z(x) − z(x')‖``), so the argmax
cannot change while ``‖δ‖₂ < (z_top − z_second) / (√2·L)`` (Tsuzuku, Sato & Sugiyama 2018).
For a model with internal randomness Ω, the certified classifier is
``F_K(x) = (1/K) Σ_k s(x; Ω_k)`` with K frozen, recorded draws; an average of L-Lipschitz
maps is L-Lipschitz, so the same radius holds for ``F_K``, exactly, with no confidence level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from certify.classifier import declared_lipschitz_bound, is_stochastic
from certify.result import CertificationResult
from certify.rounding import round_down
from certify.sampling import check_logits, model_device, require_ieee_float32
from certify.seeds import derive_seeds
from certify.validation import (
    float32_rounding_offset,
    radius_around_input,
    validate_count,
    validate_image,
    validate_lipschitz,
    validate_seed,
)


@dataclass(frozen=True)
class MarginCertificate(CertificationResult):
    """The label of ``F_K`` at ``x`` and the L2 radius within which it provably stays."""

    label: int
    radius: float
    """Certified L2 radius around ``x`` in the ``[0, 1]`` input space of shape ``input_shape``:
    ``margin / (√2·L)`` at ``float32(x)`` less ``input_rounding``, rounded down."""
    margin: float
    """``z_top − z_second`` of the averaged logits."""
    logits: tuple[float, ...]
    """The averaged logits ``F_K(x)`` (float64 mean of the model's logits)."""
    lipschitz: float
    lipschitz_source: str
    """``"argument"`` (passed by the caller) or ``"model"`` (``model.lipschitz_bound()``)."""
    ensemble: int
    seed: int
    omega_seeds: tuple[int, ...]
    """The ``omega_seed`` of each frozen draw Ω_k; empty for a deterministic model."""
    input_shape: tuple[int, ...]
    input_rounding: float
    """A bound on ``‖x − float32(x)‖₂`` (0 unless ``x`` is float64); subtracted from the radius."""
    device: str


def margin_radius(margin: float, lipschitz: float) -> float:
    """``margin / (√2·L)`` in float64, rounded down."""
    return round_down(margin / (math.sqrt(2.0) * lipschitz))


def frozen_omega_seeds(model: Any, ensemble: int, seed: int) -> tuple[int, ...]:
    """The seeds of the K = ``ensemble`` frozen draws of ``F_K``, derived from ``seed``; none
    for a deterministic model, for which ``ensemble > 1`` is refused (it would average K
    identical logit vectors)."""
    if not is_stochastic(model):
        if ensemble != 1:
            raise ValueError(
                f"ensemble={ensemble} needs a model with internal randomness (model.stochastic); "
                f"{type(model).__name__} is deterministic, so use ensemble=1"
            )
        return ()
    return derive_seeds(seed, ensemble)


def frozen_ensemble_logits(
    model: Any, batch: torch.Tensor, omega_seeds: tuple[int, ...]
) -> torch.Tensor:
    """``F_K`` on a batch: the mean logits over the frozen draws ``omega_seeds`` ``[B, K]``.

    With no seeds the model is deterministic and is run once. The mean is taken in float64
    (the margin certificate's arithmetic); gradients flow through it when the caller enables
    them, so the minimum-norm attack (:mod:`certify.attack`) attacks exactly this classifier.
    """
    size = batch.shape[0]
    if not omega_seeds:
        return check_logits(model(batch), size).to(torch.float64)
    draws = [check_logits(model(batch, omega_seed=s), size) for s in omega_seeds]
    return torch.stack(draws).to(torch.float64).mean(dim=0)


def _lipschitz_of(model: Any, lipschitz: float | None) -> tuple[float, str]:
    if lipschitz is not None:
        return validate_lipschitz(lipschitz, "argument"), "argument"
    bound = declared_lipschitz_bound(model)
    if bound is None:
        raise ValueError(
            f"{type(model).__name__} has no certified Lipschitz bound (its lipschitz_bound() is "
            "missing or None); pass lipschitz= with a certified L2 bound of its input-to-logits "
            "map, or use smoothing_certify instead"
        )
    return validate_lipschitz(bound, "model.lipschitz_bound()"), "model"


def margin_certify(
    model: Any,
    x: Any,
    *,
    lipschitz: float | None = None,
    ensemble: int = 1,
    seed: int | None = 0,
) -> MarginCertificate:
    """The Lipschitz margin certificate of ``F_K(x) = mean_k s(x; Ω_k)`` at ``x``.

    Guarantee: ``argmax F_K(x') = label`` for every ``x'`` with ``‖x' − x‖₂ < radius``,
    deterministically, provided ``L`` (``lipschitz``, else ``model.lipschitz_bound()``)
    bounds the L2 Lipschitz constant of ``x → s(x; Ω)`` for every Ω and the logits the model
    computes at ``x`` are its exact logits. The mean, margin and radius are float64 and the
    radius is rounded down; a float64 ``x`` is evaluated at ``float32(x)`` and the radius
    reduced by their distance. Rounding inside the model's own forward pass is not bounded
    here and is part of that assumption: an error ``e`` in each logit can overstate the
    radius by up to ``2e / (√2·L)`` and, when the margin is below ``2e``, give the wrong label
    (for float32 logits of magnitude ``|z|``, ``e`` is at least about ``6·10⁻⁸·|z|``, and
    grows with the depth of the network). On CUDA, TensorFloat-32 is turned off first
    (:func:`certify.sampling.require_ieee_float32`), or ``e`` would be about 10⁻³·|z|.

    A stochastic model (``model.stochastic``) is run K = ``ensemble`` times with
    ``omega_seed=`` each of K seeds derived from ``seed`` (recorded in the result). A
    deterministic model is run once, and ``ensemble > 1`` is refused: it would average K
    identical logit vectors.
    """
    image = validate_image(x)
    input_rounding = float32_rounding_offset(x, image)
    ensemble = validate_count("ensemble", ensemble)
    seed = validate_seed(seed)
    lipschitz_value, source = _lipschitz_of(model, lipschitz)
    omega_seeds = frozen_omega_seeds(model, ensemble, seed)
    device = model_device(model)
    require_ieee_float32(device)
    with torch.inference_mode():
        logits = frozen_ensemble_logits(model, image.to(device).unsqueeze(0), omega_seeds)[0]
        logits = logits.to(torch.float64).cpu()
    if logits.numel() < 2:
        raise ValueError("the margin certificate needs a model with at least two classes")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("the model returned NaN or infinite logits")

    top_two = torch.topk(logits, 2)
    margin = float(top_two.values[0] - top_two.values[1])
    return MarginCertificate(
        label=int(top_two.indices[0]),
        radius=radius_around_input(margin_radius(margin, lipschitz_value), input_rounding),
        margin=margin,
        logits=tuple(float(v) for v in logits.tolist()),
        lipschitz=lipschitz_value,
        lipschitz_source=source,
        ensemble=ensemble,
        seed=seed,
        omega_seeds=omega_seeds,
        input_shape=tuple(image.shape),
        input_rounding=input_rounding,
        device=str(device),
    )
