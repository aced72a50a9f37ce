"""The Lipschitz margin certificate against affine classifiers with exact distances."""

from __future__ import annotations

import math

import pytest
import torch

from certify import margin_certify
from certify.seeds import derive_seeds
from tests.certify.classifiers import (
    AffineClassifier,
    ConstantClassifier,
    FairCoinClassifier,
    LinearBinaryClassifier,
)


@pytest.mark.parametrize("signed_distance", [0.0, 0.01, -0.3, 0.7, -1.9, 4.2])
def test_binary_linear_margin_radius_is_the_exact_distance(image, signed_distance):
    """For logits [s, −s] the formula is tight: (2|s|) / (√2 · √2‖w‖) = |s| / ‖w‖ = d."""
    generator = torch.Generator().manual_seed(3)
    model = LinearBinaryClassifier.through_point(image, signed_distance, generator)
    d = model.distance_to_boundary(image)
    certificate = margin_certify(model, image)
    assert certificate.radius <= d
    assert certificate.radius == pytest.approx(abs(signed_distance), rel=1e-9, abs=1e-12)
    assert certificate.label == (0 if signed_distance > 0 else 1) or signed_distance == 0.0


@pytest.mark.parametrize("seed", range(20))
def test_multiclass_margin_radius_is_sound_and_equals_the_formula(image, seed):
    generator = torch.Generator().manual_seed(seed)
    classes = 2 + seed % 6
    model = AffineClassifier(
        torch.randn(classes, image.numel(), generator=generator, dtype=torch.float64),
        torch.randn(classes, generator=generator, dtype=torch.float64),
    )
    certificate = margin_certify(model, image)
    logits = sorted(model(image.unsqueeze(0))[0].tolist(), reverse=True)
    formula = (logits[0] - logits[1]) / (math.sqrt(2.0) * model.lipschitz_bound())
    assert certificate.radius == pytest.approx(formula, rel=1e-10)
    assert certificate.radius <= formula
    assert certificate.radius <= model.distance_to_boundary(image)
    assert certificate.lipschitz == model.lipschitz_bound()
    assert certificate.lipschitz_source == "model"


def test_an_explicit_lipschitz_bound_overrides_the_models(image):
    model = LinearBinaryClassifier.through_point(image, 0.5, torch.Generator().manual_seed(0))
    certificate = margin_certify(model, image, lipschitz=2 * model.lipschitz_bound())
    assert certificate.radius == pytest.approx(0.25, rel=1e-9)
    assert certificate.lipschitz_source == "argument"


def test_a_model_without_a_bound_is_refused_unless_one_is_given(image):
    model = ConstantClassifier(0, 3)
    with pytest.raises(ValueError, match="lipschitz_bound"):
        margin_certify(model, image)
    certificate = margin_certify(model, image, lipschitz=1.0)
    assert certificate.radius == pytest.approx(1 / math.sqrt(2.0), rel=1e-9)


@pytest.mark.parametrize("bound", [0.0, -1.0, float("nan"), float("inf")])
def test_an_invalid_bound_is_refused(image, bound):
    class BadBound(ConstantClassifier):
        def lipschitz_bound(self):
            return bound

    with pytest.raises(ValueError, match="Lipschitz bound"):
        margin_certify(BadBound(0, 2), image)
    with pytest.raises(ValueError, match="Lipschitz bound"):
        margin_certify(ConstantClassifier(0, 2), image, lipschitz=bound)


def test_an_ensemble_of_a_deterministic_model_is_refused(image):
    with pytest.raises(ValueError, match="deterministic"):
        margin_certify(ConstantClassifier(0, 2), image, lipschitz=1.0, ensemble=4)


def test_stochastic_ensemble_averages_the_recorded_frozen_draws(image):
    model = FairCoinClassifier()
    certificate = margin_certify(model, image, ensemble=9, seed=5)
    assert certificate.omega_seeds == derive_seeds(5, 9)
    assert len(set(certificate.omega_seeds)) == 9
    draws = torch.cat([model(image.unsqueeze(0), omega_seed=s) for s in certificate.omega_seeds])
    expected = draws.to(torch.float64).mean(dim=0)
    assert certificate.logits == pytest.approx(expected.tolist(), abs=1e-15)
    assert certificate.margin == pytest.approx(float(abs(expected[0] - expected[1])), abs=1e-15)
    again = margin_certify(model, image, ensemble=9, seed=5)
    assert again == certificate


def test_margin_certificate_serializes(image):
    record = margin_certify(FairCoinClassifier(), image, ensemble=3, seed=1).to_dict()
    assert record["ensemble"] == 3 and len(record["omega_seeds"]) == 3
    assert record["input_shape"] == [1, 8, 8]


def test_a_float64_input_is_certified_around_itself_not_its_float32_copy(image64):
    """The model sees float32(x); the radius is reduced by ‖x − float32(x)‖ to hold around x."""
    rounding = image64 - image64.to(torch.float32).to(torch.float64)
    assert float(rounding.norm()) > 1e-8
    # The hyperplane is at distance d from x, and float32 rounding moved x away from it.
    w = (-rounding / rounding.norm()).flatten()
    d = 1e-4
    model = LinearBinaryClassifier(w, d - float(image64.flatten() @ w))
    certificate = margin_certify(model, image64)
    assert certificate.label == 0
    assert certificate.radius <= d
    assert certificate.radius == pytest.approx(d, rel=1e-7)
    assert certificate.input_rounding == pytest.approx(float(rounding.norm()), rel=1e-5)
    assert certificate.input_rounding >= float(rounding.norm())
    assert margin_certify(model, image64.to(torch.float32)).input_rounding == 0.0


def test_certifying_for_cuda_turns_tensorfloat32_off(tf32_on):
    from certify.sampling import require_ieee_float32

    require_ieee_float32(torch.device("cpu"))
    assert torch.backends.cudnn.allow_tf32 is True  # the CPU is IEEE float32 already
    require_ieee_float32(torch.device("cuda"))
    assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cuda.matmul.allow_tf32 is False
