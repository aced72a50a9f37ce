"""The assembled HyCAS network: certified bound ≤ 2, adversarially checked; Ω; training."""

from __future__ import annotations

import itertools

import pytest
import torch

from models import build_hycas
from models.layers import LipschitzModule
from tests.models.operators import (
    adversarial_ratio,
    check_layer_bounds_along,
    max_jacobian_norm,
    randomize_large,
)

# The default shapes are (1, 8, 8), (1, 28, 28), (3, 32, 32) and (3, 224, 224). The default
# run searches the 8×8 network lightly and checks the composition of every small shape and of
# (3, 64, 64), the smallest input whose default config has the space-to-depth stem and the
# four stages of (3, 224, 224); the full searches on every shape run with -m slow.
SLOW = pytest.mark.slow
BUILT_SHAPES = [
    (1, 8, 8),
    (1, 28, 28),
    (3, 32, 32),
    (3, 64, 64),
    pytest.param((3, 224, 224), marks=SLOW),
]


def shape_id(shape: tuple[int, int, int]) -> str:
    return "x".join(map(str, shape))


def search(shape, starts, steps, omega_seeds=(0,), *, slow=False, light=False) -> object:
    """A gradient-ascent search on one default shape: (shape, starts, steps, Ω seeds)."""
    name = shape_id(shape) + ("-light" if light else "")
    if omega_seeds != (0,):
        name += "-omega" + ",".join(map(str, omega_seeds))
    marks = [SLOW] if slow else []
    return pytest.param(shape, starts, steps, omega_seeds, id=name, marks=marks)


# The full searches on built weights run with -m slow; the default run has light ones.
ATTACKS = [
    search((1, 8, 8), 4, 15, light=True),
    search((1, 8, 8), 6, 30, slow=True),
    search((1, 28, 28), 6, 30, slow=True),
    search((3, 32, 32), 6, 30, slow=True),
    search((3, 224, 224), 2, 4, slow=True),
]


@pytest.mark.parametrize(("shape", "starts", "steps", "omega_seeds"), ATTACKS)
def test_default_network_bound_is_at_most_two_and_survives_attack(
    shape, starts, steps, omega_seeds
):
    torch.manual_seed(0)
    model = build_hycas(shape, num_classes=10)
    bound = model.lipschitz_bound()
    assert bound <= 2.0
    for omega_seed in omega_seeds:
        ratio = adversarial_ratio(model, starts=starts, steps=steps, omega_seed=omega_seed)
        assert 0.0 < ratio <= bound


# Searches on randomized weights: light ones in the default run, full ones with -m slow.
RANDOMIZED_SEARCHES = [
    search((1, 8, 8), 4, 15, light=True),
    search((1, 8, 8), 6, 30, (0, 1), slow=True),
    search((1, 28, 28), 4, 10, slow=True),
    search((3, 32, 32), 6, 30, (0, 1), slow=True),
    search((3, 224, 224), 2, 3, slow=True),
]


@pytest.mark.parametrize(("shape", "starts", "steps", "omega_seeds"), RANDOMIZED_SEARCHES)
def test_bound_holds_for_randomized_weights(shape, starts, steps, omega_seeds):
    torch.manual_seed(1)
    model = build_hycas(shape, num_classes=5)
    randomize_large(model, scale=3.0, seed=1)
    bound = model.lipschitz_bound()
    assert bound <= 2.0
    for omega_seed in omega_seeds:
        ratio = adversarial_ratio(model, starts=starts, steps=steps, omega_seed=omega_seed)
        assert 0.0 < ratio <= bound


@pytest.mark.parametrize("shape", BUILT_SHAPES, ids=shape_id)
def test_bound_covers_every_layer_the_forward_pass_applies(shape):
    """The whole-network searches stay far below the bound at these weights, so they cannot
    see a layer left out of it; this checks the composition itself. The logits are exactly
    the chain of the top-level layers (nothing runs between or after them), every module that
    runs is a Lipschitz layer, and ``lipschitz_bound()`` consults each one of them."""
    torch.manual_seed(0)
    model = build_hycas(shape, num_classes=10)
    top = {id(layer): i for i, layer in enumerate(model.body.layers.values())}
    ran: list[torch.nn.Module] = []
    chain: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def record(module, args, output):
        ran.append(module)
        if id(module) in top:
            chain.append((top[id(module)], args[0], output))

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    x = torch.rand(2, *shape)
    try:
        with torch.no_grad():
            logits = model(x, omega_seed=3)
    finally:
        for hook in hooks:
            hook.remove()

    assert [i for i, _, _ in chain] == list(range(len(top)))
    assert torch.equal(chain[0][1], x)
    for (_, _, previous_out), (_, next_in, _) in itertools.pairwise(chain):
        assert torch.equal(next_in, previous_out)
    assert torch.equal(logits, chain[-1][2])

    strangers = sorted({type(m).__name__ for m in ran if not isinstance(m, LipschitzModule)})
    assert not strangers, f"modules without a certified bound run in forward: {strangers}"
    consulted: set[int] = set()
    for m in model.modules():
        if isinstance(m, LipschitzModule):
            method, key = m.lipschitz_bound, id(m)

            def recording(method=method, key=key):
                consulted.add(key)
                return method()

            m.lipschitz_bound = recording
    assert model.lipschitz_bound() <= 2.0
    missing = sorted({type(m).__name__ for m in ran if id(m) not in consulted})
    assert not missing, f"layers that run in forward but are left out of the bound: {missing}"


@pytest.mark.parametrize("randomized", [False, True], ids=["built", "randomized"])
def test_every_layer_bound_holds_at_its_inputs_inside_the_network(randomized):
    """Each top-level layer, at the inputs it actually receives in the network and with its
    real sizes: the exact Jacobian norm (any Ω draw) stays under its certified bound."""
    torch.manual_seed(4)
    model = build_hycas((1, 8, 8), num_classes=10, width=8)
    if randomized:
        randomize_large(model, scale=3.0, seed=4)
    check_layer_bounds_along(model, torch.rand(3, 1, 8, 8))


def test_jacobian_norm_never_exceeds_bound():
    torch.manual_seed(2)
    model = build_hycas((1, 8, 8), num_classes=4)
    randomize_large(model, scale=2.0, seed=2)
    with model.frozen(3):
        worst = max_jacobian_norm(model, (1, 8, 8), points=6)
    assert worst <= model.lipschitz_bound() + 1e-5


def test_bound_is_not_vacuous_for_the_skip():
    """The skip contributes exactly its factor 2; every other layer stays ≤ 1."""
    model = build_hycas((1, 8, 8), num_classes=10)
    bounds = model.layer_bounds()
    assert bounds["attention_skip"] == 2.0
    assert all(b <= 1.0 for name, b in bounds.items() if name != "attention_skip")


def test_frozen_is_deterministic_and_seeds_differ():
    model = build_hycas((1, 8, 8), num_classes=10)
    x = torch.rand(5, 1, 8, 8)
    with model.frozen(11):
        a = model(x)
        b = model(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(model(x, omega_seed=11), a, rtol=0, atol=0)
    assert not torch.allclose(model(x, omega_seed=12), a)
    # A frozen Ω is shared by the batch: identical inputs give identical logits.
    same = model(x[:1].expand(4, -1, -1, -1).contiguous(), omega_seed=11)
    assert torch.equal(same[0], same[3])


def test_frozen_context_restores_the_previous_mode():
    model = build_hycas((1, 8, 8), num_classes=10)
    x = torch.rand(2, 1, 8, 8)
    with model.frozen(1):
        with model.frozen(2):
            inner = model(x)
        outer = model(x)
    torch.testing.assert_close(inner, model(x, omega_seed=2), rtol=0, atol=0)
    torch.testing.assert_close(outer, model(x, omega_seed=1), rtol=0, atol=0)
    assert not torch.equal(model(x), model(x))  # stochastic again


def test_stochastic_mode_draws_fresh_omega_per_sample():
    model = build_hycas((1, 8, 8), num_classes=10)
    x = torch.rand(1, 1, 8, 8).expand(6, -1, -1, -1).contiguous()
    logits = model(x)
    assert (logits - logits[0]).abs().amax(dim=1)[1:].min() > 1e-4
    assert not torch.allclose(model(x), logits)


def test_generator_makes_stochastic_draws_reproducible():
    model = build_hycas((1, 8, 8), num_classes=10)
    x = torch.rand(3, 1, 8, 8)
    a = model(x, generator=torch.Generator().manual_seed(5))
    b = model(x, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a[0], a[1])


def test_training_reduces_loss_and_reaches_every_parameter():
    torch.manual_seed(0)
    model = build_hycas((1, 8, 8), num_classes=4)
    x = torch.rand(64, 1, 8, 8)
    y = torch.randint(0, 4, (64,))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x, omega_seed=0) * 10, y)
        opt.zero_grad()
        loss.backward()
        if not losses:
            for name, p in model.named_parameters():
                assert p.grad is not None, f"no gradient reaches {name}"
                assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"
                assert p.grad.abs().sum() > 0, f"zero gradient in {name}"
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert model.lipschitz_bound() <= 2.0


def test_random_projections_do_not_train():
    model = build_hycas((1, 8, 8), num_classes=4)
    kernels = [n for n, _ in model.named_buffers() if n.endswith("kernel")]
    assert kernels, "the network has random-projection filters"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.endswith(".kernel") for n in trainable)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.rand(1, 8, 8), "rank 3"),
        (torch.rand(2, 3, 8, 8), "1 channel"),
        (torch.rand(2, 1, 9, 8), "spatial size 8×8"),
        (torch.rand(2, 1, 8, 8, dtype=torch.float64), "float32"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "float32"),
    ],
)
def test_input_validation(x, message):
    model = build_hycas((1, 8, 8), num_classes=10)
    with pytest.raises(ValueError, match=message):
        model(x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_shape": (1, 28)}, "three positive ints"),
        ({"input_shape": (0, 8, 8)}, "three positive ints"),
        ({"num_classes": 1}, "num_classes"),
        ({"width": 7}, "even"),
        ({"kernel_size": 2}, "odd"),
        ({"stage_depths": ()}, "stage_depths"),
        ({"input_shape": (1, 30, 30), "stage_depths": (1, 1, 1)}, "multiples of 4"),
        ({"pooled_size": 3}, "pooled_size"),
        ({"mean": (0.5, 0.5)}, "channels"),
        ({"dropout": 0.1}, "unknown HyCAS config option"),
        ({"attention_temperature": float("nan")}, "finite"),
        ({"attention_noise_std": float("inf")}, "finite"),
        ({"attention_noise_std": -0.1}, "≥ 0"),
        ({"mean": (float("nan"),)}, "finite"),
        ({"std": (float("inf"),)}, "finite"),
        ({"std": (0.0,)}, "positive"),
        ({"stage_depths": (1.5,)}, "stage_depths"),
        ({"stage_depths": 2}, "stage_depths"),
        ({"kernel_size": 3.0}, "kernel_size must be an int"),
        ({"stem_downsample": 2.0}, "stem_downsample must be an int"),
        ({"width": True}, "width must be an int"),
        ({"attention_temperature": "x"}, "attention_temperature must be a number"),
        ({"random_projection": "yes"}, "random_projection"),
        ({"mean": 0.5}, "mean must be a list"),
        ({"std": ("1",)}, "std must be a list"),
    ],
)
def test_build_refuses_what_it_cannot_build(kwargs, message):
    args = {"input_shape": (1, 8, 8), "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_hycas(**args)


def test_describe_reports_bound_and_config():
    model = build_hycas((3, 32, 32), num_classes=7, width=16)
    summary = model.describe()
    assert summary["input_shape"] == [3, 32, 32]
    assert summary["config"]["width"] == 16
    assert summary["lipschitz_bound"] == model.lipschitz_bound() <= 2.0
    assert set(summary["layer_bounds"]) >= {"standardize", "attention_skip", "head"}


def test_lipschitz_only_variant_has_no_randomness():
    """The margin-only baseline: no random projections, no attention noise, deterministic."""
    model = build_hycas(
        (1, 8, 8),
        num_classes=10,
        random_projection=False,
        attention_temperature=0.0,
        attention_noise_std=0.0,
    )
    assert not [n for n, _ in model.named_buffers() if n.endswith("kernel")]
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    assert model.lipschitz_bound() <= 2.0


@pytest.mark.parametrize("batch", [100, pytest.param(1000, marks=SLOW)])
def test_forward_of_a_thousand_mnist_sized_inputs_on_cpu(batch):
    """Acceptance: a batch of 1,000 (1, 28, 28) inputs runs on CPU (timings: bench/); the
    default run checks a batch of 100."""
    model = build_hycas((1, 28, 28), num_classes=10).eval()
    with torch.inference_mode():
        logits = model(torch.rand(batch, 1, 28, 28))
    assert logits.shape == (batch, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "shape", [(1, 65, 65), pytest.param((3, 129, 129), marks=SLOW), (3, 130, 66)], ids=shape_id
)
def test_default_config_builds_sides_the_stem_cannot_divide(shape):
    model = build_hycas(shape, num_classes=3)
    assert model.lipschitz_bound() <= 2.0
    with model.frozen(0):
        assert model(torch.rand(1, *shape)).shape == (1, 3)
