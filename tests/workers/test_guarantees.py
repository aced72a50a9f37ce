"""What a result says: guarantees that name the classifier, the norm and the space, abstentions
that certify nothing, and a prediction that never switches classifier silently."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

import certify
from service.imaging.description import InputDescription
from tests.certify.classifiers import LinearBinaryClassifier
from tests.workers.records import parameters
from tests.workers.small_models import SmallModelSource
from workers.certification import (
    Certificate,
    CertificationMethod,
    CertificationReport,
    certify_image,
)
from workers.guarantees import margin_guarantee, prediction_note, rounded_down
from workers.model_cache import LoadedModel

SHAPE = (1, 4, 6)
"""Not square and not the digits' 8×8: the shape a sentence names must be the input's own."""
DISTANCE = 0.6
"""L2 distance from the test image to the linear classifier's boundary (its true radius)."""
ALL_METHODS = (
    CertificationMethod.SMOOTHING,
    CertificationMethod.MARGIN,
    CertificationMethod.RADIUS_TEST,
)


def description(shape: tuple[int, int, int] = SHAPE) -> InputDescription:
    return InputDescription(
        format="array",
        original_shape=shape[1:],
        shape=shape,
        transforms=(),
        sha256="0" * 64,
        tensor_sha256="1" * 64,
    )


def linear_model() -> tuple[LoadedModel, torch.Tensor]:
    """A classifier with class 0 at L2 distance 0.6 from the image: every method certifies."""
    image = torch.full(SHAPE, 0.5)
    model = LinearBinaryClassifier.through_point(
        image, DISTANCE, torch.Generator().manual_seed(0)
    ).eval()
    loaded = LoadedModel(
        model=model,
        model_id="linear",
        version="1",
        sha256="2" * 64,
        input_shape=SHAPE,
        class_names=("left", "right"),
        sigmas=(0.25,),
        lipschitz_bound=model.lipschitz_bound(),
        card={},
        device="cpu",
        load_seconds=0.0,
    )
    return loaded, image


def certify_linear(methods, **overrides) -> CertificationReport:
    loaded, image = linear_model()
    values = {"n": 2000, "batch_size": 500, "target_radius": 0.1, **overrides}
    return certify_image(loaded, image, parameters(methods=methods, **values), description())


def certify_small(methods, **overrides) -> CertificationReport:
    loaded = SmallModelSource().load("tiny-hycas", None)
    values = {"target_radius": 0.5, **overrides}
    image = torch.full((1, 8, 8), 0.5)
    return certify_image(
        loaded, image, parameters(methods=methods, **values), description((1, 8, 8))
    )


@pytest.mark.parametrize("method", ALL_METHODS)
def test_a_certified_guarantee_names_the_classifier_the_norm_and_the_input_space(method):
    report = certify_linear((method,))
    certificate = report.certificates[method]
    assert certificate.label == 0 and certificate.radius > 0
    text = certificate.guarantee
    assert "L2 norm below" in text or "L2 radius" in text
    assert "the 1×4×6 model input in [0, 1] (the image after the transforms listed)" in text
    assert ("smoothed classifier" in text) == (method is not CertificationMethod.MARGIN)
    if method is CertificationMethod.MARGIN:
        assert text.startswith("Exactly (no probability)")
        assert "frozen ensemble F_K" in text and "K = 1 draw" in text and "L ≤ " in text
        assert "float32 forward pass's rounding" in text and "not bounded" in text
    else:
        assert "with probability ≥ 0.999" in text.lower()
    assert "σ = 0.25" in text or method is CertificationMethod.MARGIN


@pytest.mark.parametrize("method", ALL_METHODS)
def test_the_stated_radius_never_exceeds_the_certified_one(method):
    certificate = certify_linear((method,)).certificates[method]
    stated = re.search(r"below (?:r = )?([0-9.]+)", certificate.guarantee).group(1)
    assert float(stated) <= certificate.radius <= DISTANCE
    assert float(rounded_down(certificate.radius)) <= certificate.radius


def test_rounding_down_never_overstates():
    assert rounded_down(0.17936) == "0.1793"
    assert rounded_down(0.999999999) == "0.9999"
    assert rounded_down(12.5) == "12.5" and rounded_down(0) == "0"


@pytest.mark.parametrize(
    ("method", "overrides", "why"),
    [
        (CertificationMethod.SMOOTHING, {"n": 1}, r"p̲ = 0(\.\d+)? on its top class.*below ½"),
        (CertificationMethod.RADIUS_TEST, {"target_radius": 3.0, "n": 60}, "not certified"),
    ],
)
def test_an_abstention_says_it_certifies_nothing_and_why(method, overrides, why):
    report = certify_small((method, CertificationMethod.MARGIN), **overrides)
    certificate = report.certificates[method]
    assert certificate.abstained and certificate.label is None and certificate.radius == 0
    assert certificate.guarantee.startswith("Certifies nothing")
    assert re.search(why, certificate.guarantee)
    assert "L2 radius" in certificate.guarantee and "1×8×8 model input" in certificate.guarantee


def test_an_undecided_radius_test_certifies_nothing():
    certificate = certify_linear((CertificationMethod.RADIUS_TEST,), target_radius=0.59, n=40)
    certificate = certificate.certificates[CertificationMethod.RADIUS_TEST]
    assert certificate.details["decision"] == "undecided" and certificate.label is None
    assert certificate.guarantee.startswith("Certifies nothing. Decision: undecided")


def test_the_prediction_never_switches_to_another_classifier_when_the_primary_abstains():
    """Smoothing (requested first) abstains with n = 1; the margin certificate has a label:
    the prediction stays empty and says whose label it did not take."""
    report = certify_small((CertificationMethod.SMOOTHING, CertificationMethod.MARGIN), n=1)
    margin = report.certificates[CertificationMethod.MARGIN]
    assert report.certificates[CertificationMethod.SMOOTHING].abstained
    assert margin.label is not None
    prediction = report.prediction
    assert prediction.label is None and prediction.class_name is None
    assert prediction.method is CertificationMethod.SMOOTHING
    assert prediction.classifier == "smoothed"
    assert prediction.note.startswith("No prediction: the smoothing certificate")
    assert "abstained (p̲ = " in prediction.note
    assert f"label {margin.label}" in prediction.note and "another classifier" in prediction.note


def test_a_radius_test_answer_beside_an_abstaining_smoothing_certificate_is_the_same_classifier():
    """CERTIFY (n samples) may abstain where the sequential test, with more samples, certifies
    a label of the same smoothed classifier g: the note must not call g another classifier."""

    def certificate(method, label, classifier):
        return Certificate(
            method=method,
            label=label,
            class_name=None if label is None else "left",
            radius=0.0 if label is None else 0.3,
            abstained=label is None,
            classifier=classifier,
            guarantee="",
            samples=1,
            details={},
            seconds=0.0,
        )

    smoothing = certificate(CertificationMethod.SMOOTHING, None, "smoothed")
    test = certificate(CertificationMethod.RADIUS_TEST, 0, "smoothed")
    margin = certificate(CertificationMethod.MARGIN, 0, "frozen_ensemble")
    note = prediction_note(smoothing, "p̲ = 0.4 < ½", [test, margin])
    assert note.startswith("No prediction: the smoothing certificate")
    assert "radius_test certificate's label 0 (left), from another test of the same " in note
    assert "margin certificate's label 0 (left), the answer of the frozen ensemble" in note
    assert note.count("another classifier") == 1


def test_the_prediction_is_the_first_requested_certificates_answer():
    report = certify_linear((CertificationMethod.MARGIN, CertificationMethod.SMOOTHING))
    prediction = report.prediction
    assert (prediction.label, prediction.class_name) == (0, "left")
    assert prediction.method is CertificationMethod.MARGIN
    assert prediction.classifier == "frozen_ensemble"
    assert prediction.note.startswith("The answer of the frozen ensemble F_K")
    assert "disagree" not in prediction.note


class IslandClassifier(torch.nn.Module):
    """Class 1 within L2 distance 0.1 of ``centre``, class 0 elsewhere: logits ``[r − 0.1,
    0.1 − r]`` with ``r = ‖x − centre‖``, √2-Lipschitz. At the centre the classifier answers 1,
    but Gaussian noise of σ = 0.25 in 24 dimensions almost never stays on the island: the
    smoothed classifier answers 0."""

    def __init__(self, centre: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("centre", centre.flatten().to(torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = torch.linalg.vector_norm(x.flatten(1).to(torch.float64) - self.centre, dim=1)
        return torch.stack([r - 0.1, 0.1 - r], dim=1)

    def lipschitz_bound(self) -> float:
        return 2**0.5


def test_disagreeing_certificates_are_named_in_the_note():
    loaded, image = linear_model()
    island = IslandClassifier(image)
    loaded = dataclasses.replace(loaded, model=island, lipschitz_bound=island.lipschitz_bound())
    methods = (CertificationMethod.MARGIN, CertificationMethod.SMOOTHING)
    report = certify_image(loaded, image, parameters(methods=methods, n=500), description())
    assert report.certificates[CertificationMethod.MARGIN].label == 1
    assert report.certificates[CertificationMethod.SMOOTHING].label == 0
    assert report.prediction.label == 1
    assert (
        "The smoothing certificate (the smoothed classifier g) answers label 0 (left): the "
        "classifiers disagree." in report.prediction.note
    )


def test_warnings_of_the_input_are_the_reports():
    loaded, image = linear_model()
    warned = description().model_copy(update={"warnings": ("This is not a digit.",)})
    report = certify_image(loaded, image, parameters(n=100), warned)
    assert report.warnings == report.input.warnings == ("This is not a digit.",)


def test_a_margin_of_zero_says_it_certifies_nothing_beyond_the_input():
    loaded, image = linear_model()
    tied = certify.margin_certify(loaded.model, image)
    tied = dataclasses.replace(tied, radius=0.0, margin=0.0)
    text = margin_guarantee(tied)
    assert text.startswith("Certifies nothing beyond this exact input")
    assert "certified L2 radius on the 1×4×6 model input" in text and "is 0" in text
