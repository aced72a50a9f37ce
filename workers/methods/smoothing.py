"""``smoothing``: Cohen et al.'s CERTIFY for the smoothed classifier g."""

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
    """``certify.smoothing_certify`` at the job's σ, α, n0, n, batch size and seed."""
    import certify
    from workers.guarantees import abstention_reason, smoothing_guarantee

    result = certify.smoothing_certify(
        loaded.model,
        image,
        sigma=parameters.sigma,
        n0=parameters.n0,
        n=parameters.n,
        alpha=parameters.alpha,
        batch_size=parameters.batch_size,
        seed=parameters.seed,
        progress=progress,
        should_cancel=should_cancel,
    )
    return MethodOutcome(
        label=result.label,
        radius=result.radius,
        guarantee=smoothing_guarantee(result),
        abstention_reason=abstention_reason(result),
        samples=result.samples,
        result=result,
    )


SMOOTHING = Method(
    name="smoothing",
    classifier="smoothed",
    summary="CERTIFY (Cohen et al. 2019): an L2 radius of the smoothed classifier g, "
    "with probability ≥ 1 − α",
    reads=("sigma", "alpha", "n0", "n", "batch_size", "seed"),
    plans=lambda parameters: parameters.n0 + parameters.n,
    run=run,
    default=True,
)
