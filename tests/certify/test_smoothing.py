"""CERTIFY and PREDICT against classifiers whose smoothed robustness is known exactly."""

from __future__ import annotations

import json
import math

import pytest
import torch
from scipy.stats import norm

from certify import (
    CertificationCancelled,
    NoisyVoteSampler,
    smoothing_certify,
    smoothing_predict,
)
from tests.certify.classifiers import (
    ConstantClassifier,
    FairCoinClassifier,
    LinearBinaryClassifier,
)

SIGMA = 0.25


def test_constant_classifier_gives_the_closed_form_bound_and_radius(image):
    n, alpha = 100_000, 0.001
    certificate = smoothing_certify(
        ConstantClassifier(label=2, num_classes=5),
        image,
        sigma=SIGMA,
        n=n,
        alpha=alpha,
        batch_size=10_000,
        seed=0,
    )
    assert certificate.label == 2 and not certificate.abstained
    assert certificate.counts == (0, 0, n, 0, 0)
    assert certificate.p_lower == pytest.approx(alpha ** (1 / n), rel=1e-10)
    # Rounding p_lower down by 1e-11 (relative) moves Φ⁻¹ by ~1e-8 this close to 1.
    exact_radius = SIGMA * norm.ppf(alpha ** (1 / n))
    assert certificate.radius == pytest.approx(exact_radius, rel=1e-7)
    assert certificate.radius < exact_radius
    assert certificate.radius / SIGMA == pytest.approx(3.81, abs=0.005)
    assert certificate.samples == 100 + n


def test_a_float64_input_loses_its_float32_rounding_from_the_radius(image64):
    """Sampling is centred at float32(x): around x the radius is ‖x − float32(x)‖ smaller."""
    n, alpha = 100_000, 0.001
    certificate = smoothing_certify(
        ConstantClassifier(label=1, num_classes=3), image64, sigma=SIGMA, n=n, seed=0
    )
    offset = float((image64 - image64.to(torch.float32).to(torch.float64)).norm())
    assert offset > 1e-8
    assert certificate.radius <= SIGMA * norm.ppf(alpha ** (1 / n)) - offset
    assert certificate.radius == pytest.approx(SIGMA * norm.ppf(alpha ** (1 / n)) - offset)
    assert certificate.input_rounding >= offset
    float32_copy = smoothing_certify(
        ConstantClassifier(label=1, num_classes=3), image64.to(torch.float32), sigma=SIGMA, n=n
    )
    assert float32_copy.input_rounding == 0.0


def test_noise_hidden_by_float32_rounding_is_refused():
    """At σ = 1e-8 most noisy inputs round back to x: the radius would exceed the distance."""
    x = torch.full((1, 8, 8), 0.5)
    model = LinearBinaryClassifier.through_point(x, 0.5e-8, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="float32 rounding"):
        smoothing_certify(model, x, sigma=1e-8, n=10_000, seed=0)
    smallest = smoothing_certify(model, x, sigma=1e-4, n=10_000, seed=0)
    assert smallest.radius <= model.distance_to_boundary(x)


def _linear_case(image, signed_distance, seed):
    generator = torch.Generator().manual_seed(seed)
    model = LinearBinaryClassifier.through_point(image, signed_distance, generator)
    return model, model.distance_to_boundary(image)


def test_smoothing_radius_never_exceeds_the_true_distance(image):
    """Each certificate is wrong with probability ≤ alpha; with fixed seeds none is."""
    distances = [SIGMA * t for t in (0.0, 0.05, 0.2, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)]
    checked = 0
    for index, distance in enumerate(distances):
        for sign in (1.0, -1.0):
            for seed in range(3):
                model, d = _linear_case(image, sign * distance, seed=100 * index + seed)
                certificate = smoothing_certify(
                    model, image, sigma=SIGMA, n=100_000, batch_size=10_000, seed=seed
                )
                assert certificate.radius <= d
                if not certificate.abstained:
                    assert certificate.label == (0 if sign > 0 else 1)
                checked += 1
    assert checked == 60


@pytest.mark.slow
def test_smoothing_radius_is_sound_over_a_thousand_random_points(image):
    """1,000 certificates at alpha = 0.001: more than 4 wrong has probability < 0.002."""
    generator = torch.Generator().manual_seed(2024)
    wrong = 0
    for seed in range(1000):
        signed_distance = float(torch.empty(1).uniform_(-3.0, 3.0, generator=generator)) * SIGMA
        model, d = _linear_case(image, signed_distance, seed=10_000 + seed)
        certificate = smoothing_certify(
            model, image, sigma=SIGMA, n=100_000, batch_size=20_000, seed=seed
        )
        wrong += certificate.radius > d
    assert wrong <= 4


def test_wrong_certificates_are_at_most_an_alpha_fraction(image):
    """At alpha = 0.1 failures are frequent enough to count: radius > d in ≤ 10% of runs."""
    alpha, trials = 0.1, 400
    distance = norm.ppf(0.9) * SIGMA  # the vote probability is 0.9, near the bound
    wrong = 0
    for seed in range(trials):
        model, d = _linear_case(image, distance, seed=seed)
        certificate = smoothing_certify(
            model, image, sigma=SIGMA, n0=10, n=200, alpha=alpha, batch_size=200, seed=seed
        )
        wrong += certificate.radius > d
    assert wrong / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


@pytest.mark.parametrize("distance_in_sigmas", [0.5, 1.0, 1.5, 2.0, 2.5])
def test_smoothing_radius_is_tight_on_the_linear_classifier(image, distance_in_sigmas):
    model, d = _linear_case(image, distance_in_sigmas * SIGMA, seed=7)
    certificate = smoothing_certify(
        model, image, sigma=SIGMA, n=100_000, batch_size=10_000, seed=11
    )
    assert certificate.label == 0
    assert 0.95 * d <= certificate.radius <= d


@pytest.mark.parametrize("seed", range(5))
def test_fair_coin_makes_certify_and_predict_abstain(image, seed):
    model = FairCoinClassifier()
    certificate = smoothing_certify(model, image, sigma=SIGMA, n=10_000, seed=seed)
    assert certificate.abstained and certificate.label is None and certificate.radius == 0.0
    assert certificate.p_lower < 0.5
    prediction = smoothing_predict(model, image, sigma=SIGMA, n=10_000, alpha=0.001, seed=seed)
    assert prediction.abstained and prediction.label is None
    assert prediction.p_value > 0.001


def test_predict_returns_the_side_of_a_clear_point(image):
    model, _ = _linear_case(image, -1.0 * SIGMA, seed=3)
    prediction = smoothing_predict(model, image, sigma=SIGMA, n=1000, alpha=0.001, seed=0)
    assert prediction.label == 1 and not prediction.abstained
    assert sum(prediction.counts) == prediction.samples == 1000


def test_same_seed_replays_the_certificate_and_a_new_seed_does_not(image):
    model, _ = _linear_case(image, 0.1 * SIGMA, seed=5)
    first = smoothing_certify(model, image, sigma=SIGMA, n=5000, batch_size=700, seed=42)
    again = smoothing_certify(model, image, sigma=SIGMA, n=5000, batch_size=700, seed=42)
    other = smoothing_certify(model, image, sigma=SIGMA, n=5000, batch_size=700, seed=43)
    assert first == again
    assert first.counts != other.counts


def test_replay_does_not_depend_on_the_number_of_threads(image):
    model, _ = _linear_case(image, 0.1 * SIGMA, seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = smoothing_certify(model, image, sigma=SIGMA, n=3000, batch_size=500, seed=4)
        torch.set_num_threads(4)
        several = smoothing_certify(model, image, sigma=SIGMA, n=3000, batch_size=500, seed=4)
    finally:
        torch.set_num_threads(threads)
    assert single == several


def test_replay_does_not_depend_on_whether_the_noise_is_drawn_in_threads(image, monkeypatch):
    import certify.sampling

    model, _ = _linear_case(image, 0.1 * SIGMA, seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        monkeypatch.setattr(certify.sampling, "THREADED_NOISE_MIN_ELEMENTS", 1 << 40)
        serial = smoothing_certify(model, image, sigma=SIGMA, n=3000, batch_size=500, seed=4)
        monkeypatch.setattr(certify.sampling, "THREADED_NOISE_MIN_ELEMENTS", 1)
        threaded = smoothing_certify(model, image, sigma=SIGMA, n=3000, batch_size=500, seed=4)
    finally:
        torch.set_num_threads(threads)
    assert serial == threaded


def test_stochastic_model_draws_omega_from_the_seeded_generator(image):
    """Replay only works if Ω comes from the engine's generator, not the global RNG."""
    model = FairCoinClassifier()
    first = smoothing_certify(model, image, sigma=SIGMA, n=3000, seed=9)
    torch.manual_seed(12345)
    again = smoothing_certify(model, image, sigma=SIGMA, n=3000, seed=9)
    assert first.counts == again.counts
    assert first.selection_counts == again.selection_counts


def test_fresh_seed_is_recorded_and_replays(image):
    model, _ = _linear_case(image, 0.2 * SIGMA, seed=6)
    first = smoothing_certify(model, image, sigma=SIGMA, n=2000)
    replay = smoothing_certify(model, image, sigma=SIGMA, n=2000, seed=first.seed)
    assert 0 <= first.seed < 2**63
    assert replay == first


def test_certificate_records_its_parameters_and_serializes_to_json(image):
    certificate = smoothing_certify(
        ConstantClassifier(0, 3), image, sigma=0.5, n0=50, n=400, alpha=0.01, batch_size=128, seed=3
    )
    record = json.loads(json.dumps(certificate.to_dict()))
    assert record["sigma"] == 0.5 and record["n0"] == 50 and record["n"] == 400
    assert record["alpha"] == 0.01 and record["batch_size"] == 128 and record["seed"] == 3
    assert record["input_shape"] == [1, 8, 8] and record["device"] == "cpu"
    assert record["counts"] == [400, 0, 0] and record["selection_counts"] == [50, 0, 0]
    assert record["label"] == 0 and record["samples"] == 450
    assert math.isclose(record["radius"], certificate.radius)


def test_progress_is_reported_after_every_batch(image):
    calls = []
    smoothing_certify(
        ConstantClassifier(0, 2),
        image,
        sigma=SIGMA,
        n0=100,
        n=1000,
        batch_size=300,
        seed=0,
        progress=lambda done, planned: calls.append((done, planned)),
    )
    # n0 = 100 is one batch; n = 1000 is 300 + 300 + 300 + 100.
    assert calls == [(100, 1100), (400, 1100), (700, 1100), (1000, 1100), (1100, 1100)]


def test_cancellation_stops_between_batches(image):
    batches = []

    class CountingModel(ConstantClassifier):
        def forward(self, x):
            batches.append(x.shape[0])
            return super().forward(x)

    checks = iter([False, False, False, True])
    with pytest.raises(CertificationCancelled) as raised:
        smoothing_certify(
            CountingModel(0, 2),
            image,
            sigma=SIGMA,
            n0=100,
            n=10_000,
            batch_size=100,
            seed=0,
            should_cancel=lambda: next(checks),
        )
    assert batches == [100, 100, 100]
    assert raised.value.samples_done == 300


def test_runs_under_inference_mode_and_leaves_the_module_mode_alone(image):
    seen = []

    class ModeRecordingModel(ConstantClassifier):
        def forward(self, x):
            seen.append((torch.is_inference_mode_enabled(), self.training))
            return super().forward(x)

    model = ModeRecordingModel(0, 2).train()
    smoothing_certify(model, image, sigma=SIGMA, n0=10, n=10, seed=0)
    assert seen == [(True, True), (True, True)]
    assert model.training


def test_noise_has_the_requested_scale(image):
    """The model sees x + N(0, σ²): check mean and spread of what it receives."""
    received = []

    class RecordingModel(ConstantClassifier):
        def forward(self, x):
            received.append(x.clone())
            return super().forward(x)

    smoothing_certify(RecordingModel(0, 2), image, sigma=0.3, n0=1, n=4000, batch_size=4000, seed=0)
    noise = received[1] - image
    assert noise.shape == (4000, *image.shape)
    assert noise.std().item() == pytest.approx(0.3, rel=0.01)
    assert noise.mean().abs().item() < 0.001


def test_the_sampler_refuses_to_draw_past_its_plan(image):
    sampler = NoisyVoteSampler(
        ConstantClassifier(0, 2), image, sigma=SIGMA, batch_size=64, seed=0, samples_planned=100
    )
    assert int(sampler.count(60).sum()) == 60
    with pytest.raises(ValueError, match="exceed the 100 planned"):
        sampler.count(41)
    assert int(sampler.count(40).sum()) == 40
