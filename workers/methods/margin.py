"""``margin``: the Lipschitz margin of the frozen ensemble F_K, exact."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.methods.base import Method, MethodOutcome

if TYPE_CHECKING:
    import torch

    import certify
    from workers.certification import CertificationParameters
    from workers.model_cache import LoadedModel


def run(
    loaded: LoadedModel,
    image: torch.Tensor,
    parameters: CertificationParameters,
    progress: certify.ProgressCallback,
    should_cancel: certify.CancellationCheck | None,
) -> MethodOutcome:
    """``certify.margin_certify`` with K = the job's ``ensemble`` frozen draws from its seed."""
    import certify
    from workers.guarantees import abstention_reason, margin_guarantee

    result = certify.margin_certify(
        loaded.model, image, ensemble=parameters.ensemble, seed=parameters.seed
    )
    progress(result.ensemble, result.ensemble)
    return MethodOutcome(
        label=result.label,
        radius=result.radius,
        guarantee=margin_guarantee(result),
        abstention_reason=abstention_reason(result),
        samples=result.ensemble,
        result=result,
    )


MARGIN = Method(
    name="margin",
    classifier="frozen_ensemble",
    summary="the Lipschitz margin (z₁ − z₂)/(√2·L) of the frozen ensemble F_K: exact, no sampling",
    reads=("ensemble", "seed"),
    plans=lambda parameters: parameters.ensemble,
    run=run,
    noisy_samples=False,
    needs_lipschitz_bound=True,
    default=True,
)
