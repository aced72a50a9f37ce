"""``attack``: minimum-norm L2 attacks on each classifier the job certifies; an upper bound.

Not a certificate. An attack that finds an input with another answer at L2 distance ``D``
shows that the classifier's true robust radius at the image is at most ``D``; beside a
certified radius ``r`` of the same classifier and label it brackets it, ``r ≤ true robust
radius ≤ D`` (:func:`brackets`). It is never the job's prediction and never called certified.

The classifiers attacked are those of the job's certificate methods, in order, once each: the
smoothed classifier g (``smoothing``, ``radius_test``) with :func:`certify.smoothing_attack`,
attacked at the label its certificate found; the frozen ensemble F_K (``margin``) with
:func:`certify.margin_attack`, built from the job's ``ensemble`` and ``seed`` exactly as the
margin certificate builds it. Each attack is bounded by a query cap derived from the job's
``n0``, ``n`` and ``ensemble`` (so by ``HYCAS_MAX_N`` and ``HYCAS_MAX_ENSEMBLE``), which is
what the method plans, and by the job's time limit: the attacks share what is left of it and
stop before it with what they found. Cancellation stops them between steps.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from workers.methods.base import REGISTRY, AttackOutcome, Method, MethodCall, MethodOutcome

if TYPE_CHECKING:
    import certify
    from workers.certification import CertificationParameters

MARGIN_STEPS = 100
MARGIN_RESTARTS = 2
"""DDN on F_K: 100 steps from 2 starts (``bench/bench_attack.py``: within 1.23× of the margin
radius at the median on the shipped model's test split)."""
BISECTION_STEPS = 12
"""``certify.attack.BISECTION_STEPS`` (not imported: reading the registry loads no torch)."""
SMOOTHING_STEPS = 100
SAMPLES_PER_STEP = 16
SMOOTHING_REFINE_STEPS = 6
SMOOTHING_PREDICT_RUNS = 12
"""PREDICT runs of n samples a smoothing attack may make: one at the image (when no
certificate gave g's label), four to bracket the distance, six to bisect it, one to confirm."""
TIME_RESERVE = 0.1
"""Share of the job's remaining time the attacks leave unused, so the job ends on time."""
ATTACK_SEED_CHILD = 1024
"""The attacks' seeds are children of the job's seed past those its certificates use."""


def attacked_classifiers(methods: Sequence[str]) -> tuple[str, ...]:
    """The classifiers of the job's certificate methods, in the order requested, once each."""
    registered = [REGISTRY[str(name)] for name in methods]
    return tuple(dict.fromkeys(m.classifier for m in registered if m.certifies))


def query_cap(classifier: str, parameters: CertificationParameters) -> int:
    """The model evaluations the attack on ``classifier`` may make: for g, its DDN steps with
    ``SAMPLES_PER_STEP`` noisy samples each and ``SMOOTHING_PREDICT_RUNS`` PREDICT runs of n;
    for F_K, K evaluations per point of its DDN steps, bisection and final check."""
    if classifier == "smoothed":
        return SMOOTHING_STEPS * SAMPLES_PER_STEP + SMOOTHING_PREDICT_RUNS * parameters.n
    from_start = MARGIN_RESTARTS * (MARGIN_STEPS + BISECTION_STEPS + 1)
    return parameters.ensemble * (1 + from_start)


def plans(parameters: CertificationParameters) -> int:
    """The query caps of every attacked classifier together."""
    return sum(query_cap(c, parameters) for c in attacked_classifiers(parameters.methods))


def certified_label(earlier: Mapping[str, MethodOutcome], classifier: str) -> int | None:
    """The label a certificate of ``classifier`` found earlier in the job (``None``: none)."""
    for name, outcome in earlier.items():
        if REGISTRY[name].classifier == classifier and outcome.label is not None:
            return outcome.label
    return None


def run(call: MethodCall) -> AttackOutcome:
    """One attack per classifier the job certifies, each within its query cap and its share of
    the job's remaining time; progress counts queries against the caps."""
    import certify
    from certify.seeds import derive_seeds
    from workers.guarantees import attack_guarantee

    parameters = call.parameters
    classifiers = attacked_classifiers(parameters.methods)
    seeds = derive_seeds(parameters.seed, ATTACK_SEED_CHILD + len(classifiers))
    results: list[certify.AttackResult] = []
    done = 0
    for index, classifier in enumerate(classifiers):
        cap = query_cap(classifier, parameters)
        max_seconds = None
        if call.deadline is not None:
            left = (call.deadline - time.monotonic()) * (1 - TIME_RESERVE)
            max_seconds = max(0.0, left / (len(classifiers) - index))

        def report(queries: int, _cap: int, offset: int = done) -> None:
            call.progress(offset + queries, plans(parameters))

        bounds = {
            "max_queries": cap,
            "max_seconds": max_seconds,
            "progress": report,
            "should_cancel": call.should_cancel,
        }
        if classifier == "smoothed":
            result = certify.smoothing_attack(
                call.loaded.model,
                call.image,
                sigma=parameters.sigma,
                label=certified_label(call.earlier, classifier),
                alpha=parameters.alpha,
                samples_per_step=SAMPLES_PER_STEP,
                steps=SMOOTHING_STEPS,
                predict_n=parameters.n,
                batch_size=parameters.batch_size,
                refine_steps=SMOOTHING_REFINE_STEPS,
                seed=seeds[ATTACK_SEED_CHILD + index],
                **bounds,
            )
        else:
            result = certify.margin_attack(
                call.loaded.model,
                call.image,
                ensemble=parameters.ensemble,
                seed=parameters.seed,
                attack_seed=seeds[ATTACK_SEED_CHILD + index],
                steps=MARGIN_STEPS,
                restarts=MARGIN_RESTARTS,
                **bounds,
            )
        results.append(result)
        done += cap
        call.progress(done, plans(parameters))
    return AttackOutcome(
        attacks=tuple(results),
        guarantees=tuple(attack_guarantee(result) for result in results),
        samples=sum(result.queries for result in results),
    )


ATTACK = Method(
    name="attack",
    classifier="each_certified",
    summary="minimum-norm L2 attacks (DDN) on the classifier of each certificate requested: "
    "the closest input found with another answer, an upper bound on the true robust radius, "
    "never a certificate",
    reads=("sigma", "alpha", "n", "batch_size", "ensemble", "seed"),
    plans=plans,
    run=run,
    noisy_samples=False,
    certifies=False,
)
