"""Minimum-norm attacks: tight on classifiers with known distances, never inside a certificate.

An attack's distance is an upper bound on the true robust radius, a certificate's radius a
lower bound; on affine classifiers both are known exactly, so the attack must land just
outside the true distance, and on the shipped network it must never land inside the margin
certificate's radius (that would prove the certificate or the attack wrong).
"""

from __future__ import annotations

import math

import pytest
import torch

import certify
import models
from certify.attack import margin_attack, smoothing_attack
from models.data import load_digits_split
from tests.certify.classifiers import AffineClassifier, LinearBinaryClassifier

SHAPE = (1, 8, 8)


def _interior_image(seed: int) -> torch.Tensor:
    """An image away from the box edges, so the box does not move the nearest boundary point."""
    generator = torch.Generator().manual_seed(seed)
    return 0.35 + 0.3 * torch.rand(SHAPE, generator=generator)


def _affine(seed: int, classes: int, x: torch.Tensor, spread: float) -> AffineClassifier:
    """Random weights (rows of norm about 16), and a bias that puts the logits at ``x``
    uniformly in ``[0, spread]``: the boundary lies about ``spread / 45`` away at most."""
    generator = torch.Generator().manual_seed(seed)
    weight = 2.0 * torch.randn(classes, math.prod(SHAPE), generator=generator, dtype=torch.float64)
    at_x = spread * torch.rand(classes, generator=generator, dtype=torch.float64)
    return AffineClassifier(weight, at_x - weight @ x.flatten().to(torch.float64))


@pytest.mark.parametrize("seed", range(6))
def test_margin_attack_lands_within_five_percent_of_an_affine_classifiers_boundary(seed):
    x = _interior_image(seed)
    model = _affine(seed, classes=2 + seed % 4, x=x, spread=8.0)
    true_distance = model.distance_to_boundary(x)
    assert true_distance < 0.3  # the nearest boundary point stays inside [0, 1]

    found = margin_attack(model, x, seed=seed)

    assert found.label == int(model(x.unsqueeze(0)).argmax())
    assert found.label_found is not None and found.label_found != found.label
    assert int(model(found.adversarial.unsqueeze(0)).argmax()) == found.label_found
    assert true_distance * (1 - 1e-6) <= found.distance <= 1.05 * true_distance
    assert float((found.adversarial.double() - x.double()).norm()) <= found.distance
    assert found.queries <= found.max_queries


@pytest.mark.parametrize("seed", range(4))
def test_margin_attack_never_beats_the_margin_certificate_of_an_affine_classifier(seed):
    x = _interior_image(seed)
    model = _affine(100 + seed, classes=5, x=x, spread=8.0)
    certificate = certify.margin_certify(model, x)
    found = margin_attack(model, x, seed=seed)
    assert found.distance is not None and certificate.radius <= found.distance


@pytest.mark.parametrize("signed_distance", [0.4, -0.6])
def test_smoothing_attack_lands_within_five_percent_of_a_linear_smoothed_boundary(
    signed_distance,
):
    # The smoothed classifier of a linear binary classifier has the same boundary, so its
    # true robust radius is the distance to the hyperplane.
    x = _interior_image(7)
    generator = torch.Generator().manual_seed(3)
    model = LinearBinaryClassifier.through_point(x, signed_distance, generator)
    sigma = 0.25

    found = smoothing_attack(model, x, sigma=sigma, predict_n=20_000, seed=11)

    assert found.label == (0 if signed_distance > 0 else 1)
    assert found.label_found == 1 - found.label
    distance = abs(signed_distance)
    assert distance <= found.distance <= 1.05 * distance
    certificate = certify.smoothing_certify(model, x, sigma=sigma, n=20_000, seed=5)
    assert certificate.radius <= found.distance
    assert found.p_value is not None and found.p_value <= found.alpha


def test_smoothing_attack_takes_the_label_it_is_given_and_replays_from_its_seed():
    x = _interior_image(8)
    model = LinearBinaryClassifier.through_point(x, 0.3, torch.Generator().manual_seed(1))
    first = smoothing_attack(model, x, sigma=0.25, label=0, predict_n=5_000, seed=4)
    again = smoothing_attack(model, x, sigma=0.25, label=0, predict_n=5_000, seed=4)
    assert first.to_dict() == again.to_dict() | {"seconds": first.seconds}
    assert first.label == 0 and first.label_found == 1


def test_attacks_stop_at_their_query_budget_and_report_why():
    x = _interior_image(1)
    # Two classes 100 logits apart with rows about 23 apart: the boundary is over 4 away.
    far = _affine(1, classes=2, x=x, spread=0.0)
    model = AffineClassifier(far.weight, far.bias + torch.tensor([100.0, 0.0], dtype=torch.float64))
    assert model.distance_to_boundary(x) > 3.0
    found = margin_attack(model, x, max_queries=40, restarts=2, steps=500)
    assert found.stopped == "budget" and found.queries <= 40

    linear = LinearBinaryClassifier.through_point(x, 0.3, torch.Generator().manual_seed(2))
    found = smoothing_attack(linear, x, sigma=0.25, label=0, max_queries=500, predict_n=1000)
    assert found.label_found is None and found.queries <= 500


def test_attacks_stop_at_their_time_limit():
    x = _interior_image(2)
    found = margin_attack(_affine(2, 3, x, 8.0), x, steps=10_000, max_seconds=0.0)
    assert found.stopped == "time_limit" and found.label_found is None


def test_attacks_honour_cancellation_and_report_progress():
    x = _interior_image(3)
    model = _affine(3, classes=3, x=x, spread=8.0)
    seen: list[tuple[int, int]] = []
    with pytest.raises(certify.CertificationCancelled):
        margin_attack(
            model,
            x,
            progress=lambda done, planned: seen.append((done, planned)),
            should_cancel=lambda: len(seen) >= 3,
        )
    assert len(seen) == 3 and all(planned == 100_000 for _, planned in seen)
    with pytest.raises(certify.CertificationCancelled):
        smoothing_attack(model, x, sigma=0.25, label=0, should_cancel=lambda: True)


def test_attacks_refuse_bad_arguments():
    x = _interior_image(4)
    model = _affine(4, classes=3, x=x, spread=8.0)
    with pytest.raises(ValueError, match="ensemble"):
        margin_attack(model, x, ensemble=2)
    with pytest.raises(ValueError, match="steps"):
        margin_attack(model, x, steps=0)
    with pytest.raises(ValueError, match="sigma"):
        smoothing_attack(model, x, sigma=-1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        margin_attack(model, x + 1.0)


@pytest.fixture(scope="module")
def digits_model():
    model, _card = models.load("digits-hycas", repository=models.repository.SHIPPED_REPOSITORY)
    return model.eval()


def _assert_no_flip_inside_margin_certificates(
    model, images, ensemble: int, restarts: int = 2, steps: int = 100
) -> None:
    for index, image in enumerate(images):
        certificate = certify.margin_certify(model, image, ensemble=ensemble, seed=index)
        found = margin_attack(
            model, image, ensemble=ensemble, seed=index, steps=steps, restarts=restarts
        )
        assert found.label == certificate.label
        if found.distance is not None:
            assert found.distance >= certificate.radius, (index, found, certificate)


def test_no_attack_flips_the_shipped_frozen_ensemble_inside_its_certified_radius(digits_model):
    dataset = load_digits_split("test")
    images = [dataset.images[225]]
    _assert_no_flip_inside_margin_certificates(digits_model, images, ensemble=1)
    _assert_no_flip_inside_margin_certificates(digits_model, images[:1], ensemble=2)


@pytest.mark.slow
def test_no_attack_flips_the_shipped_frozen_ensemble_on_the_whole_test_split(digits_model):
    dataset = load_digits_split("test")
    images = list(dataset.images)
    assert len(images) == 450
    _assert_no_flip_inside_margin_certificates(
        digits_model, images, ensemble=1, restarts=1, steps=50
    )
