"""``margin``: the Lipschitz margin of the frozen ensemble F_K, exact."""

from __future__ import annotations

from workers.methods.base import Method, MethodCall, MethodOutcome, certificate_outcome


def run(call: MethodCall) -> MethodOutcome:
    """``certify.margin_certify`` with K = the job's ``ensemble`` frozen draws from its seed."""
    import certify
    from workers.guarantees import margin_guarantee

    parameters = call.parameters
    result = certify.margin_certify(
        call.loaded.model, call.image, ensemble=parameters.ensemble, seed=parameters.seed
    )
    call.progress(result.ensemble, result.ensemble)
    return certificate_outcome(result, margin_guarantee(result), result.ensemble)


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
