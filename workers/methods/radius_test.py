"""``radius_test``: the sequential test of "is g certified at target_radius?"."""

from __future__ import annotations

from workers.methods.base import Method, MethodCall, MethodOutcome, certificate_outcome


def run(call: MethodCall) -> MethodOutcome:
    """``certify.certify_at_radius`` at the job's ``target_radius`` with a budget of n."""
    import certify
    from workers.guarantees import radius_test_guarantee

    parameters = call.parameters
    result = certify.certify_at_radius(
        call.loaded.model,
        call.image,
        parameters.target_radius,
        max_samples=parameters.n,
        **call.smoothing_options(),
    )
    certified = result.decision is certify.RadiusDecision.CERTIFIED
    return certificate_outcome(
        result, radius_test_guarantee(result), result.samples, certified=certified
    )


RADIUS_TEST = Method(
    name="radius_test",
    classifier="smoothed",
    summary="a sequential test of whether g is certified at target_radius, stopping as "
    "soon as it knows (error ≤ α whatever the stopping time)",
    reads=("sigma", "alpha", "n0", "n", "batch_size", "target_radius", "seed"),
    requires=("target_radius",),
    plans=lambda parameters: parameters.n0 + parameters.n,
    run=run,
)
