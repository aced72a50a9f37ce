"""``radius_test``: the sequential test of "is g certified at target_radius?"."""

from __future__ import annotations

from workers.methods.base import Method, MethodCall, MethodOutcome


def run(call: MethodCall) -> MethodOutcome:
    """``certify.certify_at_radius`` at the job's ``target_radius`` with a budget of n."""
    import certify
    from workers.guarantees import abstention_reason, radius_test_guarantee

    parameters = call.parameters
    result = certify.certify_at_radius(
        call.loaded.model,
        call.image,
        parameters.target_radius,
        sigma=parameters.sigma,
        alpha=parameters.alpha,
        max_samples=parameters.n,
        batch_size=parameters.batch_size,
        seed=parameters.seed,
        n0=parameters.n0,
        progress=call.progress,
        should_cancel=call.should_cancel,
    )
    certified = result.decision is certify.RadiusDecision.CERTIFIED
    return MethodOutcome(
        label=result.label if certified else None,
        radius=result.radius if certified else 0.0,
        guarantee=radius_test_guarantee(result),
        abstention_reason=abstention_reason(result),
        samples=result.samples,
        result=result,
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
