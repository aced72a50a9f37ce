"""``smoothing``: Cohen et al.'s CERTIFY for the smoothed classifier g."""

from __future__ import annotations

from workers.methods.base import Method, MethodCall, MethodOutcome


def run(call: MethodCall) -> MethodOutcome:
    """``certify.smoothing_certify`` at the job's σ, α, n0, n, batch size and seed."""
    import certify
    from workers.guarantees import abstention_reason, smoothing_guarantee

    parameters = call.parameters
    result = certify.smoothing_certify(
        call.loaded.model,
        call.image,
        sigma=parameters.sigma,
        n0=parameters.n0,
        n=parameters.n,
        alpha=parameters.alpha,
        batch_size=parameters.batch_size,
        seed=parameters.seed,
        progress=call.progress,
        should_cancel=call.should_cancel,
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
