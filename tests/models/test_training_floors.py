"""Floors on the residual mixes β and the gate weights: kept after training, bound still ≤ 2."""

from __future__ import annotations

import pytest
import torch

from models.architectures import build_model
from models.data import load_digits_split
from models.layers import ConvexGate, ConvexResidual
from models.layers.gates import raise_to_floors
from models.training import TrainingSettings, train_classifier
from tests.models.operators import adversarial_ratio


def collapsed_hycas():
    """A small HyCAS whose hybrid blocks are switched off as training left the shipped model:
    β ≈ 0.01 and the random-projection and frequency weights ≈ 0.005."""
    torch.manual_seed(0)
    model = build_model("hycas", (1, 8, 8), 10, {"width": 8}, trainable=True)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ConvexResidual):
                module.mix_logits.copy_(torch.tensor([0.0, -4.6]))
            elif isinstance(module, ConvexGate):
                module.gate_logits.copy_(torch.tensor([0.0, -5.3, -5.3]))
    return model


def mixes(model) -> tuple[list[float], list[float]]:
    """Every residual's β and every gate branch weight, as certified."""
    betas = [m.beta() for m in model.modules() if isinstance(m, ConvexResidual)]
    gates = [w for m in model.modules() if isinstance(m, ConvexGate) for w in m.weights().tolist()]
    return betas, gates


def test_raise_to_floors_lifts_only_what_is_below_and_keeps_the_sum():
    logits = torch.log(torch.tensor([0.9, 0.09, 0.01]))
    assert raise_to_floors(logits, [0.2, 0.2, 0.2])
    weights = torch.softmax(logits, dim=0)
    assert weights.min() >= 0.2 and float(weights.double().sum()) <= 1 + 1e-6
    assert weights[0] > 0.55  # the others were lowered together, in proportion
    untouched = logits.clone()
    assert not raise_to_floors(logits, [0.2, 0.2, 0.2])
    assert torch.equal(logits, untouched)
    with pytest.raises(ValueError, match="sum to more than 1"):
        raise_to_floors(logits, [0.5, 0.5, 0.5])


@pytest.fixture(scope="module")
def digits_subset():
    return load_digits_split("train").head(128)


def test_floors_hold_after_training_and_the_bound_stays_at_most_two(digits_subset):
    settings = TrainingSettings(
        epochs=1,
        batch_size=64,
        learning_rate=0.1,
        margin_weight=0.5,
        beta_floor=0.3,
        gate_floor=0.2,
    )
    unfloored = collapsed_hycas()
    train_classifier(
        unfloored,
        digits_subset,
        TrainingSettings(**{**settings.to_dict(), "beta_floor": 0.0, "gate_floor": 0.0}),
        progress=False,
    )
    betas, gates = mixes(unfloored)
    assert max(betas) < 0.3 and min(gates) < 0.2  # left alone, the blocks stay off

    model = collapsed_hycas()
    train_classifier(model, digits_subset, settings, progress=False)
    betas, gates = mixes(model)
    assert len(betas) == 2 and len(gates) == 6
    assert min(betas) >= 0.3 and min(gates) >= 0.2
    bound = model.lipschitz_bound()
    assert bound <= 2.0
    assert 0.0 < adversarial_ratio(model, starts=2, steps=5) <= bound


@pytest.mark.parametrize(
    ("architecture", "floors", "message"),
    [
        ("cnn", {"beta_floor": 0.1}, "beta_floor needs residual mixes"),
        ("cnn", {"gate_floor": 0.1}, "gate_floor needs convex gates"),
        ("hycas", {"gate_floor": 0.4}, "exceeds 1; at most 0.3333"),
    ],
)
def test_floors_the_network_cannot_keep_are_refused(digits_subset, architecture, floors, message):
    torch.manual_seed(0)
    model = build_model(architecture, (1, 8, 8), 10, {"width": 8}, trainable=True)
    with pytest.raises(ValueError, match=message):
        train_classifier(model, digits_subset, TrainingSettings(epochs=1, **floors))


def test_floors_outside_zero_one_are_refused():
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        TrainingSettings(beta_floor=1.5)
