"""The sequential radius test: agrees with CERTIFY, never overclaims, stops early when easy."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from scipy.stats import norm

from certify import (
    RadiusDecision,
    certify_at_radius,
    geometric_checkpoints,
    smoothing_certify,
)
from tests.certify.classifiers import ConstantClassifier, LinearBinaryClassifier

SIGMA = 0.25
MAX_SAMPLES = 100_000


def _linear(image, signed_distance, seed):
    model = LinearBinaryClassifier.through_point(
        image, signed_distance, torch.Generator().manual_seed(seed)
    )
    return model, model.distance_to_boundary(image)


def test_checkpoints_double_and_end_at_max_samples():
    assert geometric_checkpoints(1000) == (64, 128, 256, 512, 1000)
    assert geometric_checkpoints(64) == (64,)
    assert geometric_checkpoints(10) == (10,)
    assert geometric_checkpoints(MAX_SAMPLES)[-1] == MAX_SAMPLES


@pytest.mark.parametrize("distance_in_sigmas", [-2.0, -0.5, 0.0, 0.2, 0.4, 1.1, 1.5, 2.0, 3.0])
def test_decision_agrees_with_fixed_n_certify(image, distance_in_sigmas):
    radius = 0.75 * SIGMA
    model, _ = _linear(image, distance_in_sigmas * SIGMA, seed=21)
    test = certify_at_radius(
        model, image, radius, sigma=SIGMA, max_samples=MAX_SAMPLES, batch_size=10_000, seed=1
    )
    fixed = smoothing_certify(model, image, sigma=SIGMA, n=MAX_SAMPLES, batch_size=10_000, seed=2)
    fixed_certified = not fixed.abstained and fixed.radius >= radius
    expected = RadiusDecision.CERTIFIED if fixed_certified else RadiusDecision.NOT_CERTIFIED
    assert test.decision == expected
    if fixed_certified:
        assert test.label == fixed.label


def test_never_certifies_a_radius_above_the_true_distance(image):
    radius = SIGMA
    for index, fraction in enumerate([0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0]):
        for seed in range(3):
            model, d = _linear(image, fraction * radius, seed=10 * index + seed)
            assert d <= radius * (1 + 1e-12)  # float64 rounding of the constructed distance
            test = certify_at_radius(
                model, image, radius, sigma=SIGMA, max_samples=20_000, batch_size=5000, seed=seed
            )
            assert test.decision != RadiusDecision.CERTIFIED


def test_wrong_certified_answers_are_at_most_an_alpha_fraction(image):
    """Just inside the threshold, at alpha = 0.1, whatever checkpoint the test stops at."""
    alpha, trials = 0.1, 300
    wrong = 0
    for seed in range(trials):
        model, _ = _linear(image, 0.97 * SIGMA, seed=seed)
        test = certify_at_radius(
            model, image, SIGMA, sigma=SIGMA, alpha=alpha, max_samples=2000, n0=10, seed=seed
        )
        wrong += test.decision == RadiusDecision.CERTIFIED
    assert wrong / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


def test_wrong_not_certified_answers_are_at_most_an_alpha_fraction(image):
    """On the threshold (d = r, a hair outside) "not certified" is wrong; at most alpha of runs."""
    alpha, trials = 0.1, 200
    wrong = 0
    for seed in range(trials):
        model, _ = _linear(image, 1.000001 * SIGMA, seed=seed)
        test = certify_at_radius(
            model, image, SIGMA, sigma=SIGMA, alpha=alpha, max_samples=2000, n0=10, seed=seed
        )
        wrong += test.decision == RadiusDecision.NOT_CERTIFIED
    assert wrong / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


def test_easy_points_stop_far_before_max_samples(image):
    radius = SIGMA
    samples = []
    for index, d in enumerate(torch.linspace(0.0, 3.0 * SIGMA, 16).tolist()):
        model, _ = _linear(image, d, seed=index)
        test = certify_at_radius(
            model, image, radius, sigma=SIGMA, max_samples=MAX_SAMPLES, batch_size=10_000, seed=0
        )
        samples.append(test.samples)
        if abs(d - radius) > 0.5 * SIGMA:
            assert test.decision != RadiusDecision.UNDECIDED
    assert statistics.median(samples) <= 0.02 * MAX_SAMPLES
    assert max(samples) <= 100 + MAX_SAMPLES


def test_a_point_on_the_threshold_stays_undecided_and_uses_every_sample(image):
    model, _ = _linear(image, SIGMA, seed=4)
    test = certify_at_radius(
        model, image, SIGMA, sigma=SIGMA, max_samples=4000, batch_size=1000, seed=0
    )
    assert test.decision == RadiusDecision.UNDECIDED
    assert test.samples == 100 + 4000 and test.estimation_samples == 4000
    assert test.p_lower < test.threshold < test.p_upper


def test_the_result_records_its_schedule_and_serializes(image):
    test = certify_at_radius(
        ConstantClassifier(1, 3), image, 0.1, sigma=SIGMA, alpha=0.01, max_samples=1000, seed=8
    )
    assert test.decision == RadiusDecision.CERTIFIED and test.label == 1
    assert test.samples == 100 + 64 and test.votes == 64
    record = test.to_dict()
    assert record["decision"] == "certified"
    assert record["checkpoints"] == [64, 128, 256, 512, 1000]
    assert record["alpha_per_checkpoint"] == pytest.approx(0.01 / 5)
    assert record["seed"] == 8 and record["max_samples"] == 1000


def test_same_seed_replays_the_decision(image):
    model, _ = _linear(image, 0.9 * SIGMA, seed=2)
    first = certify_at_radius(model, image, 0.5 * SIGMA, sigma=SIGMA, max_samples=20_000, seed=3)
    again = certify_at_radius(model, image, 0.5 * SIGMA, sigma=SIGMA, max_samples=20_000, seed=3)
    assert first == again


def test_a_float64_input_needs_the_radius_plus_its_float32_rounding(image64):
    offset = float((image64 - image64.to(torch.float32).to(torch.float64)).norm())
    test = certify_at_radius(
        ConstantClassifier(0, 2), image64, 0.1, sigma=SIGMA, max_samples=1000, seed=0
    )
    assert offset > 1e-8
    assert test.threshold >= norm.cdf((0.1 + offset) / SIGMA)
    assert test.threshold == pytest.approx(norm.cdf((0.1 + offset) / SIGMA), rel=1e-10)
    assert test.input_rounding >= offset
    float32_copy = certify_at_radius(
        ConstantClassifier(0, 2), image64.to(torch.float32), 0.1, sigma=SIGMA, max_samples=1000
    )
    assert float32_copy.input_rounding == 0.0
    assert float32_copy.threshold == norm.cdf(0.1 / SIGMA)
