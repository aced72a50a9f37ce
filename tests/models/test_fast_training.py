"""Training shortcuts (models.layers.fast_training): faster steps, the same certified network.

The shortcuts round differently (derived weights in float32, merged gate convolutions) and
carry no certificate; these tests check that the bound is never read from them, that the
certified forward pass is untouched, and that a package trained with them holds its bound
against exact per-layer norms and an adversarial search on the whole network.
"""

from __future__ import annotations

import pytest
import torch

import models
from models import build_hycas
from models.data import load_digits_split
from models.evaluation import EvaluationSettings
from models.layers import AOLConv2d, LipschitzModule, NormalizedLinear, fast_training
from models.training import TrainingRequest, TrainingSettings, train_and_package
from tests.models.operators import (
    adversarial_ratio,
    check_layer_bounds_along,
    exact_affine_norm,
)


def small_hycas(seed: int = 0):
    torch.manual_seed(seed)
    return build_hycas((1, 8, 8), num_classes=10, width=8)


def test_shortcuts_compute_the_certified_function_and_never_its_bound():
    model = small_hycas()
    x = torch.rand(4, 1, 8, 8)
    certified = model(x, omega_seed=2).detach()
    bounds = (model.lipschitz_bound(), model.layer_bounds())
    with fast_training(model):
        shortcut = model(x, omega_seed=2)
        assert (model.lipschitz_bound(), model.layer_bounds()) == bounds
        with torch.no_grad():
            assert torch.equal(model(x, omega_seed=2), certified)
        with torch.inference_mode():
            assert torch.equal(model(x, omega_seed=2), certified)
    assert not torch.equal(shortcut.detach(), certified), "the shortcuts were not taken"
    torch.testing.assert_close(shortcut.detach(), certified, rtol=1e-5, atol=1e-5)
    assert torch.equal(model(x, omega_seed=2), certified)
    assert not any(m.fast_training for m in model.modules() if isinstance(m, LipschitzModule))


def omega_of(kind: str) -> dict:
    """One Ω for the whole batch (frozen), or one per sample drawn from a generator (as in
    training); the same arguments give the same Ω."""
    if kind == "frozen":
        return {"omega_seed": 1}
    return {"generator": torch.Generator().manual_seed(1)}


@pytest.mark.parametrize("omega", ["frozen", "per sample"])
def test_shortcut_gradients_match_the_certified_ones(omega):
    shortcut, certified = small_hycas(), small_hycas()
    x = torch.rand(6, 1, 8, 8)
    with fast_training(shortcut):
        shortcut(x, **omega_of(omega)).square().sum().backward()
    certified(x, **omega_of(omega)).square().sum().backward()
    for (name, p), q in zip(shortcut.named_parameters(), certified.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.fixture(
    scope="module",
    params=[("float32", "clean"), ("bfloat16", "noisy")],
    ids=["float32, margin on clean inputs", "bfloat16 autocast, margin on noisy inputs"],
)
def shortcut_package(request, tmp_path_factory):
    """A few training steps with the shortcuts, pushed hard (large learning rate), packaged
    and loaded back: in float32 with the two-batch objective, and in mixed precision
    (bfloat16 forward passes) with the one-pass objective."""
    precision, margin_inputs = request.param
    repository = tmp_path_factory.mktemp("repository")
    request = TrainingRequest(
        model_id="digits-fast",
        config={"width": 8},
        training=TrainingSettings(
            epochs=1,
            batch_size=128,
            learning_rate=0.3,
            margin_weight=0.5,
            margin_inputs=margin_inputs,
            precision=precision,
        ),
        evaluation=EvaluationSettings(n0=10, n=20, ensemble=2),
        eval_limit=2,
    )
    outcome = train_and_package(request, repository=repository, device="cpu", progress=False)
    model, card = models.load("digits-fast", repository=repository)
    return model, card, outcome


def test_shortcut_trained_package_records_the_certified_bound(shortcut_package):
    model, card, outcome = shortcut_package
    assert outcome.run.steps == 11
    bound = model.lipschitz_bound()
    assert bound <= card.lipschitz_bound <= 2.0
    assert card.lipschitz_bound - bound < 1e-6


def test_shortcut_trained_package_holds_its_bound_per_layer_and_under_attack(shortcut_package):
    """The affine layers are checked with no tolerance beyond the float64 SVD's error: their
    materialised operators hold the float32 kernels exactly, so a kernel rounded without the
    cast margin (as the shortcuts do) could show above 1."""
    model, _, _ = shortcut_package
    affine = [m for m in model.modules() if isinstance(m, AOLConv2d | NormalizedLinear)]
    assert len(affine) >= 5
    for layer in affine:
        aol = isinstance(layer, AOLConv2d)
        shape = (layer.in_channels, 5, 5) if aol else (layer.in_features,)
        assert exact_affine_norm(layer, shape) <= layer.lipschitz_bound() * (1 + 1e-12)
    check_layer_bounds_along(model, load_digits_split("test").images[:2])
    ratio = adversarial_ratio(model, starts=3, steps=10)
    assert 0.0 < ratio <= model.lipschitz_bound()
