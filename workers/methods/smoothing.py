"""``smoothing``: Cohen et al.'s CERTIFY for the smoothed classifier g."""

from __future__ import annotations

from workers.methods.base import Method, MethodCall, MethodOutcome, certificate_outcome


def run(call: MethodCall) -> MethodOutcome:
    """``certify.smoothing_certify`` at the job's σ, α, n0, n, batch size and seed."""
    import certify
    from workers.guarantees import smoothing_guarantee

    result = certify.smoothing_certify(
        call.loaded.model, call.image, n=call.parameters.n, **call.smoothing_options()
    )
    return certificate_outcome(result, smoothing_guarantee(result), result.samples)


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
