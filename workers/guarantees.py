"""What each certificate guarantees, in the sentences a result carries.

Every sentence names the classifier it is about, the norm (L2) and the space the radius lives
in (the ``C×H×W`` model input in ``[0, 1]``, after the decoding steps the result lists); a
certificate that certifies nothing says so first, and why. Numbers never overstate: radii,
probabilities and confidence levels are rounded down, Lipschitz bounds up.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING

import certify

if TYPE_CHECKING:
    from workers.certification import Certificate

CLASSIFIERS = {
    "smoothed": "the smoothed classifier g",
    "frozen_ensemble": "the frozen ensemble F_K",
}
"""The classifier each certificate is about, by :attr:`Certificate.classifier`."""


def _digits(value: float | Decimal, rounding: str, significant: int = 4) -> str:
    """``value`` rounded to ``significant`` digits in the direction ``rounding``."""
    exact = value if isinstance(value, Decimal) else Decimal(value)
    if exact == 0:
        return "0"
    quantum = Decimal(1).scaleb(exact.adjusted() - significant + 1)
    return f"{exact.quantize(quantum, rounding=rounding).normalize():f}"


def rounded_down(value: float | Decimal, significant: int = 4) -> str:
    """``value`` rounded down to ``significant`` digits: how radii and probabilities are shown."""
    return _digits(value, ROUND_FLOOR, significant)


def _up(value: float, significant: int = 6) -> str:
    return _digits(value, ROUND_CEILING, significant)


def _confidence(alpha: float) -> str:
    """``1 − α`` rounded down, computed from α's decimal form (0.001 gives 0.999, not 0.9989)."""
    return rounded_down(1 - Decimal(repr(alpha)), significant=6)


def input_space(shape: Sequence[int]) -> str:
    """The space every radius lives in: ``the 1×8×8 model input in [0, 1] (…)``."""
    return (
        f"the {'×'.join(str(d) for d in shape)} model input in [0, 1] "
        "(the image after the transforms listed)"
    )


def smoothing_guarantee(result: certify.SmoothingCertificate) -> str:
    """CERTIFY (Cohen et al. 2019): with probability at least ``1 − α`` over the run's noise,
    the smoothed classifier g returns ``label`` everywhere within L2 radius ``σ·Φ⁻¹(p̲)``; when
    ``p̲ < ½`` it abstains and certifies nothing."""
    space = input_space(result.input_shape)
    sigma = f"Gaussian noise σ = {result.sigma:g} and the model's own randomness"
    p_lower = rounded_down(result.p_lower)
    if result.label is None:
        return (
            f"Certifies nothing: the smoothed classifier g ({sigma}) abstained because the "
            f"lower confidence bound p̲ = {p_lower} on its top class's probability is below ½ "
            f"(n = {result.n:,} samples, α = {result.alpha:g}); no label and no L2 "
            f"radius of {space} are claimed."
        )
    return (
        f"With probability ≥ {_confidence(result.alpha)}, no perturbation of L2 norm below "
        f"{rounded_down(result.radius)} of {space} changes the smoothed classifier's answer "
        f"{result.label} (g: the most likely class of the model under {sigma}; "
        f"p̲ = {p_lower} from n = {result.n:,} samples, radius σ·Φ⁻¹(p̲))."
    )


def margin_guarantee(result: certify.MarginCertificate) -> str:
    """The Lipschitz margin: exactly, with no probability, the frozen ensemble ``F_K`` (mean
    logits of K recorded draws, L-Lipschitz) keeps its label within ``(z₁ − z₂)/(√2·L)``; a
    tie (radius 0) certifies nothing beyond the input itself. Like
    :func:`certify.margin_certify`, it takes the logits the float32 forward pass computed as
    exact, and the sentence says so."""
    space = input_space(result.input_shape)
    ensemble = (
        f"the frozen ensemble F_K (the mean logits of K = {result.ensemble} draw(s) of the "
        f"model, seeds recorded; L ≤ {_up(result.lipschitz)} its certified Lipschitz bound)"
    )
    margin = rounded_down(result.margin)
    if result.radius <= 0:
        return (
            f"Certifies nothing beyond this exact input: {ensemble} answers {result.label}, but "
            f"its top two logits are tied (margin {margin}), so its certified L2 radius on "
            f"{space} is 0. Exactly (no probability)."
        )
    return (
        f"Exactly (no probability): no perturbation of L2 norm below "
        f"{rounded_down(result.radius)} of {space} changes the answer {result.label} of "
        f"{ensemble}; radius (z₁ − z₂)/(√2·L) with margin z₁ − z₂ = {margin}, taken as the "
        f"logits' exact value (the float32 forward pass's rounding, about 10⁻⁷ of the logits "
        f"per layer, is not bounded)."
    )


def radius_test_guarantee(result: certify.RadiusTestResult) -> str:
    """The sequential test at radius r: with probability at least ``1 − α`` whatever the
    stopping time, ``certified`` means the smoothed classifier g keeps the label within L2
    radius r; ``not_certified`` and ``undecided`` certify nothing."""
    space = input_space(result.input_shape)
    radius = f"r = {rounded_down(result.radius, significant=6)} of {space}"
    smoothed = f"the smoothed classifier g (Gaussian noise σ = {result.sigma:g})"
    bounds = (
        f"p̲ = {rounded_down(result.p_lower)}, p̄ = {_digits(result.p_upper, ROUND_CEILING)}, "
        f"threshold Φ(r/σ) = {rounded_down(result.threshold)}, after {result.samples:,} samples"
    )
    confidence = f"with probability ≥ {_confidence(result.alpha)} whatever the stopping time"
    if result.decision is certify.RadiusDecision.CERTIFIED:
        return (
            f"Decision: certified, {confidence}: no perturbation of L2 norm below {radius} changes "
            f"{smoothed}'s answer {result.label}; {bounds}."
        )
    if result.decision is certify.RadiusDecision.NOT_CERTIFIED:
        return (
            f"Certifies nothing. Decision: not certified, {confidence}: {smoothed} is not "
            f"certified at L2 radius {radius}; the upper bound p̄ on its top class's probability is "
            f"below the threshold: {bounds}."
        )
    return (
        f"Certifies nothing. Decision: undecided: the sample budget ran out before the test "
        f"could tell whether {smoothed} is certified at L2 radius {radius}; {bounds}."
    )


def _attacked(result: certify.AttackResult) -> str:
    if result.classifier == "smoothed":
        return f"the smoothed classifier g (Gaussian noise σ = {result.sigma:g})"
    return f"the frozen ensemble F_K (K = {result.ensemble} draw(s), seeds recorded)"


def attack_guarantee(result: certify.AttackResult) -> str:
    """A minimum-norm attack: an input found at L2 distance D with another answer shows the
    true robust radius is at most D (for g, with probability at least ``1 − α`` over the
    confirming PREDICT run); an upper bound, never a certificate, and finding nothing shows
    nothing."""
    space = input_space(result.input_shape)
    attacked = _attacked(result)
    if result.label is None:
        return (
            f"Certifies nothing and bounds nothing: {attacked} abstained at this input "
            f"(PREDICT, n = {result.predict_n:,}, α = {result.alpha:g}), so there was no answer "
            "to attack."
        )
    if result.distance is None:
        why = {"budget": "its query cap ran out", "time_limit": "its time limit ran out"}
        return (
            f"Certifies nothing and bounds nothing: the attack on {attacked} found no input "
            f"that changes its answer {result.label} within {result.queries:,} model "
            f"evaluations ({why.get(result.stopped, 'every step ran')}); finding none is no "
            "evidence of robustness."
        )
    distance = _up(result.distance, significant=4)
    if result.classifier == "smoothed":
        checked = (
            f"with probability ≥ {_confidence(result.alpha)} (a PREDICT run of "
            f"n = {result.predict_n:,} samples, seeded after the input was chosen, answered "
            f"{result.label_found})"
        )
    else:
        checked = f"exactly (re-evaluated in float64: F_K answers {result.label_found})"
    return (
        f"Certifies nothing (an attack gives an upper bound, not a certificate): an input at "
        f"L2 distance {distance} of {space} changes the answer {result.label} of {attacked}, "
        f"{checked}; so its true robust radius at this input is at most {distance}."
    )


def bracket_statement(certified: float, found: float, method: str, classifier: str) -> str:
    """``certified ≤ true robust radius ≤ found`` for one classifier and label, each end with
    its own guarantee; a found distance below the certified radius contradicts the
    certificate and is reported, never hidden."""
    who = CLASSIFIERS[classifier]
    low, high = rounded_down(certified), _up(found, significant=4)
    if found < certified:
        chance = (
            "a bug: the margin certificate is exact"
            if classifier == "frozen_ensemble"
            else "an event of probability at most 2α (CERTIFY's and PREDICT's) or a bug"
        )
        return (
            f"Contradiction: the attack found an input at L2 distance {high}, inside the radius "
            f"{low} the {method} certificate certifies for {who}: {chance}. Please report it."
        )
    return (
        f"Bracket for {who}: {low} ≤ true L2 robust radius ≤ {high}; the lower end is the "
        f"{method} certificate's guarantee, the upper end the attack's (an input found with "
        "another answer)."
    )


def abstention_reason(result: certify.CertificationResult) -> str | None:
    """Why a certificate certifies no label, in a few words; ``None`` when it has one."""
    if isinstance(result, certify.SmoothingCertificate) and result.label is None:
        return f"p̲ = {rounded_down(result.p_lower)} < ½"
    if isinstance(result, certify.RadiusTestResult):
        if result.decision is certify.RadiusDecision.NOT_CERTIFIED:
            return f"not certified at r = {rounded_down(result.radius, significant=6)}"
        if result.decision is certify.RadiusDecision.UNDECIDED:
            return f"undecided at r = {rounded_down(result.radius, significant=6)}"
    return None


def _answer(certificate: Certificate) -> str:
    return f"label {certificate.label} ({certificate.class_name})"


def prediction_note(primary: Certificate, reason: str | None, others: Sequence[Certificate]) -> str:
    """What the prediction is: the answer of the primary certificate (the first method
    requested) and its classifier, or that there is none because it abstained (``reason``).
    Other certificates are named when they answer differently: never silently substituted."""
    classifier = CLASSIFIERS[primary.classifier]
    if primary.label is None:
        note = (
            f"No prediction: the {primary.method.value} certificate (the first method "
            f"requested) abstained ({reason}) and certifies nothing."
        )
        answering = [c for c in others if c.label is not None]
        if answering:
            named = "; ".join(
                f"the {c.method.value} certificate's {_answer(c)}, "
                + (
                    f"the answer of {CLASSIFIERS[c.classifier]}, another classifier"
                    if c.classifier != primary.classifier
                    else "from another test of the same classifier with its own samples"
                )
                for c in answering
            )
            note += f" Not used in its place: {named} (see certificates)."
        return note
    note = (
        f"The answer of {classifier} (the {primary.method.value} certificate, the first method "
        f"requested), certified to L2 radius {rounded_down(primary.radius)}."
    )
    if primary.radius <= 0:
        note += " A radius of 0 covers this exact input only."
    for other in others:
        if other.label is None:
            note += f" The {other.method.value} certificate abstained."
        elif other.label != primary.label:
            note += (
                f" The {other.method.value} certificate ({CLASSIFIERS[other.classifier]}) "
                f"answers {_answer(other)}: the classifiers disagree."
            )
    return note
