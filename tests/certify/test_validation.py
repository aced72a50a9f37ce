"""Bad input is refused with a ValueError that names the problem, before any sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from certify import certify_at_radius, margin_certify, smoothing_certify, smoothing_predict
from certify.validation import radius_around_input
from tests.certify.classifiers import ConstantClassifier

GOOD = torch.full((1, 4, 4), 0.5)


def _with(value, index=(0, 0, 0)):
    image = GOOD.clone()
    image[index] = value
    return image


BAD_IMAGES = [
    (torch.full((4, 4), 0.5), "one image"),
    (torch.full((1, 1, 4, 4), 0.5), "one image"),
    (torch.zeros((1, 0, 4)), "empty"),
    (torch.full((1, 4, 4), 128, dtype=torch.uint8), "floating-point"),
    (_with(float("nan")), "NaN"),
    (_with(float("inf")), "infinite"),
    (_with(1.5), r"\[0, 1\]"),
    (_with(-0.01), r"\[0, 1\]"),
    ("an image", "image tensor"),
]

CALLS = {
    "smoothing_certify": lambda model, x, **kw: smoothing_certify(
        model, x, **{"sigma": 0.25, "n0": 10, "n": 10, **kw}
    ),
    "smoothing_predict": lambda model, x, **kw: smoothing_predict(
        model, x, **{"sigma": 0.25, "n": 10, **kw}
    ),
    "certify_at_radius": lambda model, x, **kw: certify_at_radius(
        model, x, kw.pop("radius", 0.1), **{"sigma": 0.25, "max_samples": 10, **kw}
    ),
}


class NeverCalled(ConstantClassifier):
    def forward(self, x):
        raise AssertionError("the model must not run on refused input")


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize(("x", "message"), BAD_IMAGES)
def test_bad_images_are_refused(call, x, message):
    with pytest.raises(ValueError, match=message):
        CALLS[call](NeverCalled(0, 2), x)


@pytest.mark.parametrize(("x", "message"), BAD_IMAGES)
def test_bad_images_are_refused_by_the_margin_certificate(x, message):
    with pytest.raises(ValueError, match=message):
        margin_certify(NeverCalled(0, 2), x, lipschitz=1.0)


BAD_PARAMETERS = [
    ({"sigma": 0.0}, "sigma"),
    ({"sigma": -0.25}, "sigma"),
    ({"sigma": 1e-8}, "float32 rounding"),
    ({"sigma": float("nan")}, "sigma"),
    ({"sigma": "0.25"}, "sigma"),
    ({"alpha": 0.0}, "alpha"),
    ({"alpha": 0.5}, "alpha"),
    ({"alpha": 0.9}, "alpha"),
    ({"alpha": 1e-101}, "below 1e-100"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**63}, "seed"),
    ({"seed": "7"}, "seed"),
]


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize(("parameters", "message"), BAD_PARAMETERS)
def test_bad_parameters_are_refused(call, parameters, message):
    with pytest.raises(ValueError, match=message):
        CALLS[call](NeverCalled(0, 2), GOOD, **parameters)


@pytest.mark.parametrize(
    ("call", "parameters", "message"),
    [
        ("smoothing_certify", {"n": 0}, "n must"),
        ("smoothing_certify", {"n0": 0}, "n0"),
        ("smoothing_certify", {"n": True}, "n must"),
        ("smoothing_predict", {"n": -5}, "n must"),
        ("certify_at_radius", {"max_samples": 0}, "max_samples"),
        ("certify_at_radius", {"n0": 0}, "n0"),
        ("certify_at_radius", {"radius": -0.1}, "radius"),
        ("certify_at_radius", {"radius": float("inf")}, "radius"),
    ],
)
def test_bad_counts_and_radii_are_refused(call, parameters, message):
    with pytest.raises(ValueError, match=message):
        CALLS[call](NeverCalled(0, 2), GOOD, **parameters)


@pytest.mark.parametrize(
    ("parameters", "message"), [({"ensemble": 0}, "ensemble"), ({"seed": -3}, "seed")]
)
def test_bad_margin_parameters_are_refused(parameters, message):
    with pytest.raises(ValueError, match=message):
        margin_certify(NeverCalled(0, 2), GOOD, lipschitz=1.0, **parameters)


def test_numpy_images_are_accepted():
    certificate = smoothing_certify(
        ConstantClassifier(1, 2), np.full((1, 4, 4), 0.5), sigma=0.25, n0=10, n=10, seed=0
    )
    assert certificate.label == 1
    assert certificate.input_shape == (1, 4, 4)


@pytest.mark.parametrize(
    "output",
    [lambda b: torch.zeros(b), lambda b: torch.zeros(b + 1, 2), lambda b: [0] * b],
)
def test_a_model_with_the_wrong_output_shape_is_refused(output):
    with pytest.raises(ValueError, match=r"logits \[batch, classes\]"):
        smoothing_certify(lambda x: output(x.shape[0]), GOOD, sigma=0.25, n0=10, n=10, seed=0)


@pytest.mark.parametrize(
    ("radius", "rounding"), [(0.5, 0.0), (0.5, 1e-8), (0.5, 0.25), (1e-9, 1e-8), (0.0, 1e-8)]
)
def test_a_radius_moved_to_the_caller_input_never_exceeds_the_triangle_inequality(radius, rounding):
    moved = radius_around_input(radius, rounding)
    assert 0.0 <= moved <= max(0.0, radius - rounding)
    assert moved == radius or rounding > 0.0
