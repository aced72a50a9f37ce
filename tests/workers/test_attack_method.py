"""The ``attack`` method: an upper bound beside each certificate, never the answer, bounded.

On a linear classifier the true robust radius is known (0.6), so each bracket must hold it:
the certificate's radius at most 0.6, the attack's distance at least 0.6 (the attack's input
really has another answer) and close to it.
"""

from __future__ import annotations

import time

import pytest

import certify
from service.core.config import Settings
from service.errors import InvalidRequest
from service.job_inputs import resolve_parameters
from service.schemas import CertifyOptions
from tests.workers.records import parameters
from tests.workers.small_models import SMALL_MODEL_ID, SmallModelSource
from tests.workers.test_guarantees import DISTANCE, description, linear_model
from workers.certification import AttackReport, Certificate, CertificationMethod, certify_image
from workers.methods import method
from workers.methods.attack import query_cap

METHODS = (CertificationMethod.SMOOTHING, CertificationMethod.MARGIN, CertificationMethod.ATTACK)


def _attack_linear(methods=METHODS, **hooks):
    loaded, image = linear_model()
    values = parameters(methods=methods, n=2000, batch_size=500)
    return values, certify_image(loaded, image, values, description(), **hooks)


def test_brackets_hold_the_true_radius_of_a_linear_classifier_for_both_classifiers():
    values, report = _attack_linear()

    attack = report.certificates[CertificationMethod.ATTACK]
    assert isinstance(attack, AttackReport)
    findings = [attack, *attack.other_classifiers]
    assert [f.classifier for f in findings] == ["smoothed", "frozen_ensemble"]
    for finding in findings:
        assert finding.label == 0 and finding.label_found == 1
        assert finding.class_name_found == "right"
        assert DISTANCE * (1 - 1e-6) <= finding.distance <= 1.15 * DISTANCE
        assert finding.queries <= finding.max_queries == query_cap(finding.classifier, values)
        assert finding.guarantee.startswith("Certifies nothing (an attack gives an upper bound")
    brackets = {b.classifier: b for b in report.brackets}
    assert set(brackets) == {"smoothed", "frozen_ensemble"}
    for bracket in brackets.values():
        certificate = report.certificates[bracket.method]
        assert certificate.classifier == bracket.classifier and certificate.label == 0
        assert bracket.certified == certificate.radius <= DISTANCE <= bracket.found
        assert bracket.consistent and bracket.statement.startswith("Bracket for the ")

    # The attack is never the answer, and its result has no radius to be read as one.
    assert report.prediction.method is CertificationMethod.SMOOTHING
    assert "attack" not in report.prediction.note
    assert not hasattr(attack, "radius")


def test_attack_runs_after_the_certificates_and_the_first_certificate_answers():
    _, report = _attack_linear(
        (CertificationMethod.ATTACK, CertificationMethod.MARGIN), should_cancel=None
    )
    assert list(report.certificates) == [CertificationMethod.ATTACK, CertificationMethod.MARGIN]
    assert isinstance(report.certificates[CertificationMethod.MARGIN], Certificate)
    assert report.prediction.method is CertificationMethod.MARGIN
    attack = report.certificates[CertificationMethod.ATTACK]
    assert attack.classifier == "frozen_ensemble" and attack.other_classifiers == []
    assert [b.method for b in report.brackets] == [CertificationMethod.MARGIN]


def test_an_attack_without_a_certificate_is_refused():
    loaded = SmallModelSource().load(SMALL_MODEL_ID, None)
    with pytest.raises(InvalidRequest, match="upper bound beside a certificate"):
        resolve_parameters(CertifyOptions(methods=("attack",)), loaded, Settings(redis_url=None))
    assert not method("attack").default and not method("attack").certifies


def test_attacks_stop_at_the_jobs_deadline_and_the_job_keeps_its_certificates():
    _, report = _attack_linear(deadline=time.monotonic())
    attack = report.certificates[CertificationMethod.ATTACK]
    for finding in (attack, *attack.other_classifiers):
        assert finding.stopped == "time_limit" and finding.distance is None
        assert "its time limit ran out" in finding.guarantee
    assert report.brackets == ()
    assert report.certificates[CertificationMethod.MARGIN].radius > 0


def test_attacks_honour_cancellation_and_report_progress_against_their_caps():
    values = parameters(methods=METHODS, n=2000, batch_size=500)
    certificates = values.samples_planned(CertificationMethod.SMOOTHING) + 1
    seen: list[tuple[int, int]] = []

    def cancel_once_attacking() -> bool:
        return bool(seen) and seen[-1][0] > certificates + 100

    loaded, image = linear_model()
    with pytest.raises(certify.CertificationCancelled):
        certify_image(
            loaded,
            image,
            values,
            description(),
            progress=lambda done, planned: seen.append((done, planned)),
            should_cancel=cancel_once_attacking,
        )
    assert all(planned == values.total_samples_planned for _, planned in seen)
    assert certificates + 100 < seen[-1][0] < values.total_samples_planned
