"""Every layer's certified bound against the exact operator norm of the small layer.

Pattern: materialise the operator (affine layers) or its Jacobian at random points
(nonlinear layers), take the exact spectral norm by SVD, and require it never to exceed the
certified bound, for the initial weights, for huge random weights, and after gradient ascent
on the layer's Lipschitz ratio.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from models.layers import (
    AdditiveSkip,
    AOLConv2d,
    ConvexGate,
    ConvexResidual,
    Flatten,
    FrequencyFilter,
    InvertibleDownsample,
    LipschitzSequential,
    MaxMin,
    NormalizedLinear,
    OmegaSource,
    RandomProjectionConv2d,
    ScaledAvgPool2d,
    Standardize,
    StochasticAttention,
    fast_training,
)
from models.layers.aol import _shift_groups, aol_scale, aol_scale_by_products
from models.layers.head import largest_singular_value
from tests.models.operators import (
    exact_affine_norm,
    max_jacobian_norm,
    push_lipschitz_ratio,
    randomize_large,
)

TOL = 1e-5


def check_affine(layer, input_shape, f=None) -> float:
    f = f or layer
    exact = exact_affine_norm(f, input_shape)
    bound = layer.lipschitz_bound()
    assert exact <= bound + TOL, f"exact norm {exact} exceeds the certified bound {bound}"
    return exact


def check_affine_any_weights(layer, input_shape, f=None) -> None:
    """The bound holds as built, after adversarial ascent from there, with huge random
    weights, and after ascent from those.

    Both ascents are needed: from weights of size ~1e3 a few Adam steps of size ~0.3 barely
    move anything, so the ascent from the built weights is the one that explores.
    """
    f = f or layer
    check_affine(layer, input_shape, f)
    push_lipschitz_ratio(layer, f, input_shape)
    check_affine(layer, input_shape, f)
    randomize_large(layer)
    check_affine(layer, input_shape, f)
    push_lipschitz_ratio(layer, f, input_shape, seed=1)
    check_affine(layer, input_shape, f)


@pytest.mark.parametrize(
    ("c_in", "c_out", "kernel", "stride", "size"),
    [
        (c_in, c_out, k, s, size)
        for (c_in, c_out), k, s, size in itertools.product(
            [(1, 2), (3, 4), (4, 4), (6, 3)], [1, 3, 5], [1, 2], [5, 6]
        )
    ],
)
def test_aol_conv_bound_holds_for_any_weights(c_in, c_out, kernel, stride, size):
    torch.manual_seed(c_in * 100 + c_out * 10 + kernel)
    layer = AOLConv2d(c_in, c_out, kernel, stride=stride)
    check_affine_any_weights(layer, (c_in, size, size))


@pytest.mark.parametrize(("c_out", "c_in", "kernel"), [(4, 4, 3), (3, 6, 1), (5, 2, 5), (8, 8, 3)])
def test_aol_scale_by_products_is_the_aol_scale(c_out, c_in, kernel):
    """The training shortcut's scale (one matrix product, summed per shift) is the certified
    computation's (a padded convolution of the kernel with itself), up to float64 rounding;
    with a zero input column as well."""
    torch.manual_seed(c_out * 10 + kernel)
    weight = torch.randn(c_out, c_in, kernel, kernel, dtype=torch.float64)
    weight[:, 0] = 0.0
    torch.testing.assert_close(aol_scale_by_products(weight), aol_scale(weight), rtol=1e-13, atol=0)


def test_aol_shift_groups_are_made_once_and_serve_training_after_inference():
    """The constant of :func:`aol_scale_by_products` is cached; made first under inference
    mode, it is still an ordinary tensor that a training step's backward pass can save."""
    _shift_groups.cache_clear()
    weight = torch.randn(4, 3, 3, 3)
    with torch.inference_mode():
        aol_scale_by_products(weight)
    trainable = weight.clone().requires_grad_()
    aol_scale_by_products(trainable).sum().backward()
    assert trainable.grad is not None
    assert _shift_groups(3, torch.float32, torch.device("cpu")) is _shift_groups(
        3, torch.float32, torch.device("cpu")
    )


def test_aol_conv_is_not_vacuous():
    """AOL rescaling of an orthogonal-like kernel keeps most of the norm (no needless shrink)."""
    torch.manual_seed(0)
    layer = AOLConv2d(4, 4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.linalg.qr(torch.randn(4, 4))[0].view(4, 4, 1, 1))
    assert exact_affine_norm(layer, (4, 5, 5)) > 0.999


@pytest.mark.parametrize(
    ("c_in", "c_out", "kernel", "size"),
    list(itertools.product([1, 3], [2, 4], [1, 3, 5], [(5, 5), (6, 4)])),
)
def test_random_projection_bound(c_in, c_out, kernel, size):
    layer = RandomProjectionConv2d(c_in, c_out, kernel, size, seed=kernel + c_out)
    exact = check_affine(layer, (c_in, *size))
    assert layer.lipschitz_bound() <= 1.0
    # Sound, and not absurdly loose even when the kernel is as large as the image.
    assert exact >= 0.5 * layer.lipschitz_bound()


def test_random_projection_bound_is_tight_at_realistic_sizes():
    """On images much larger than the kernel, the n + k − 1 torus bound is nearly exact."""
    layer = RandomProjectionConv2d(2, 2, 3, (16, 16), seed=3)
    exact = check_affine(layer, (2, 16, 16))
    assert exact >= 0.97 * layer.lipschitz_bound()


def test_random_projection_is_frozen_and_seeded():
    a = RandomProjectionConv2d(2, 4, 3, (6, 6), seed=7)
    b = RandomProjectionConv2d(2, 4, 3, (6, 6), seed=7)
    c = RandomProjectionConv2d(2, 4, 3, (6, 6), seed=8)
    assert torch.equal(a.kernel, b.kernel)
    assert not torch.equal(a.kernel, c.kernel)
    assert not any(p.requires_grad for p in a.parameters())


def test_random_projection_recertifies_a_replaced_kernel():
    """A kernel loaded from elsewhere is certified afresh, never trusted from the old bound."""
    layer = RandomProjectionConv2d(3, 4, 3, (5, 5), seed=0)
    with torch.no_grad():
        layer.kernel.mul_(50.0)
    bound = layer.lipschitz_bound()
    assert bound > 40.0
    assert exact_affine_norm(layer, (3, 5, 5)) <= bound + TOL


def test_random_projection_recertifies_a_kernel_edited_through_data():
    """An in-place edit through ``.data`` bumps no version counter; the bound must follow the
    values, not a (pointer, version) key."""
    layer = RandomProjectionConv2d(3, 4, 3, (5, 5), seed=0)
    assert layer.lipschitz_bound() <= 1.0
    layer.kernel.data.mul_(50.0)
    assert exact_affine_norm(layer, (3, 5, 5)) <= layer.lipschitz_bound() + TOL


def test_cached_weights_follow_edits_through_data():
    """Without gradients the derived weights are cached; a ``.data`` edit must not leave the
    forward pass running on the old weights."""
    torch.manual_seed(0)
    conv, head = AOLConv2d(2, 3, 3), NormalizedLinear(6, 3)
    x, v = torch.rand(2, 2, 5, 5), torch.rand(2, 6)
    with torch.no_grad():
        conv(x), head(v)  # fill the caches
        conv.weight.data.copy_(torch.randn(3, 2, 3, 3))
        head.weight.data.copy_(torch.randn(3, 6))
        torch.testing.assert_close(
            conv(x), F.conv2d(x, conv.effective_weight(), conv.bias, padding=1), rtol=0, atol=0
        )
        torch.testing.assert_close(
            head(v), F.linear(v, head.effective_weight(), head.bias), rtol=0, atol=0
        )
    check_affine(head, (6,))


def _with_singular_values(values: torch.Tensor, columns: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = len(values)
    u, _ = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(columns, k, generator=g, dtype=torch.float64))
    return (u * values) @ v.T


@pytest.mark.parametrize(("rows", "columns"), [(2, 3), (7, 128), (10, 10), (10, 512)])
def test_head_training_norm_is_the_svd_one_and_never_above_it(rows, columns):
    """The head's training shortcut divides by :func:`largest_singular_value`: on row-normalised
    matrices as the head has them it is the SVD's ``σ_max`` to float32 rounding, never above."""
    g = torch.Generator().manual_seed(rows * columns)
    for _ in range(10):
        m = torch.randn(rows, columns, generator=g)
        m = m / m.norm(dim=1, keepdim=True)
        exact = float(torch.linalg.matrix_norm(m.double(), ord=2))
        found = float(largest_singular_value(m))
        assert abs(found - exact) <= 4e-7 * exact
        assert found <= exact * (1 + 4e-7)


@pytest.mark.parametrize("gap", [1e-2, 1e-3, 1e-4, 1e-5, 0.0])
def test_largest_singular_value_with_close_top_values_stays_within_its_guarantee(gap):
    """Top singular values ``1`` and ``1 − gap``: at most 2.2·10⁻⁵ low (the docstring's bound
    for 12 squarings), never above; in float64, to rounding where the gap is 1 %."""
    values = torch.linspace(1.0, 0.2, 10, dtype=torch.float64)
    values[1] = 1.0 - gap
    m = _with_singular_values(values, 64, seed=int(gap * 1e5))
    for matrix, rounding in ((m, 1e-14), (m.float(), 4e-7)):
        found = float(largest_singular_value(matrix))
        assert 1.0 - 2.2e-5 - rounding <= found <= 1.0 + rounding
    if gap >= 1e-2:
        assert abs(float(largest_singular_value(m)) - 1.0) <= 1e-14


def test_largest_singular_value_of_many_rows_and_under_autocast():
    """A thousand rows (the squarings rescaled often enough not to overflow float32), and a
    bfloat16 autocast region (the products still in float32)."""
    g = torch.Generator().manual_seed(5)
    many = torch.randn(1000, 64, generator=g)
    many = many / many.norm(dim=1, keepdim=True)
    exact = float(torch.linalg.matrix_norm(many.double(), ord=2))
    assert abs(float(largest_singular_value(many)) - exact) <= 1e-6 * exact
    few = torch.randn(10, 64, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        found = largest_singular_value(few)
    assert found.dtype == torch.float32
    exact = float(torch.linalg.matrix_norm(few.double(), ord=2))
    assert abs(float(found) - exact) <= 4e-7 * exact


def test_largest_singular_value_has_the_gradient_of_the_svd():
    values = torch.tensor([1.3, 1.0, 0.7, 0.5, 0.2], dtype=torch.float64)
    m = _with_singular_values(values, 20, seed=3)
    ours, svd = m.clone().requires_grad_(), m.clone().requires_grad_()
    largest_singular_value(ours).backward()
    torch.linalg.matrix_norm(svd, ord=2).backward()
    torch.testing.assert_close(ours.grad, svd.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("channels", "size"), [(2, (4, 4)), (4, (5, 3)), (3, (6, 6))])
def test_frequency_filter_bound(channels, size):
    torch.manual_seed(channels)
    layer = FrequencyFilter(channels, size)
    check_affine_any_weights(layer, (channels, *size))


def test_frequency_filter_with_open_mask_is_nearly_orthogonal():
    """Mask ≈ 1 and an orthogonal mix: the branch preserves norms (the DCT is orthonormal)."""
    layer = FrequencyFilter(2, (5, 5))
    with torch.no_grad():
        layer.mask_logits.fill_(40.0)
        layer.mix.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
    assert exact_affine_norm(layer, (2, 5, 5)) == pytest.approx(1.0, abs=1e-4)


def hybrid_gate(channels: int, size: tuple[int, int], kernel: int) -> ConvexGate:
    return ConvexGate(
        [
            AOLConv2d(channels, channels, kernel, bias=False),
            RandomProjectionConv2d(channels, channels, kernel, size, seed=1),
            FrequencyFilter(channels, size),
        ],
        out_channels=channels,
    )


@pytest.mark.parametrize(("channels", "kernel"), [(2, 1), (2, 3), (4, 3), (4, 5)])
def test_convex_gate_bound(channels, kernel):
    torch.manual_seed(kernel)
    gate = hybrid_gate(channels, (5, 5), kernel)
    check_affine_any_weights(gate, (channels, 5, 5))
    assert gate.lipschitz_bound() <= 1.0


def test_convex_gate_weights_are_scalars_summing_to_at_most_one():
    gate = hybrid_gate(2, (4, 4), 3)
    with torch.no_grad():
        gate.gate_logits.copy_(torch.tensor([30.0, -5.0, 0.1]))
    w = gate.weights()
    assert w.shape == (3,)
    assert float(w.detach().double().sum()) <= 1.0


@pytest.mark.parametrize("kernel", [1, 3])
def test_convex_residual_bound(kernel):
    torch.manual_seed(0)
    block = ConvexResidual(AOLConv2d(3, 3, kernel))
    check_affine_any_weights(block, (3, 5, 5))
    assert block.lipschitz_bound() <= 1.0


def test_additive_skip_bound_is_one_plus_body():
    torch.manual_seed(0)
    skip = AdditiveSkip(AOLConv2d(2, 2, 3))
    assert skip.lipschitz_bound() == 2.0
    check_affine_any_weights(skip, (2, 4, 4))
    # An identity body reaches the bound: the factor 2 is real.
    with torch.no_grad():
        skip.body.weight.zero_()
        skip.body.weight[:, :, 1, 1] = torch.eye(2)
    assert exact_affine_norm(skip, (2, 4, 4)) == pytest.approx(2.0, abs=1e-4)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("temperature", "noise"), [(1.0, 0.1), (10.0, 1.0), (0.0, 0.0)])
def test_stochastic_attention_is_one_lipschitz_for_every_draw(seed, temperature, noise):
    layer = StochasticAttention(3, (4, 5), temperature=temperature, noise_std=noise)
    shape = (3, 4, 5)

    def frozen(x):
        return layer(x, OmegaSource(x.shape[0], x.device, seed=seed))

    check_affine_any_weights(layer, shape, frozen)


def test_stochastic_attention_masks_depend_on_omega_not_on_input():
    layer = StochasticAttention(2, (3, 3), temperature=1.0, noise_std=0.0)
    x = torch.rand(1, 2, 3, 3)
    a = layer(x, OmegaSource(1, x.device, seed=1))
    b = layer(x, OmegaSource(1, x.device, seed=2))
    assert not torch.allclose(a, b)
    # Same Ω: the layer is linear in x (the mask does not look at the input).
    two = layer(2 * x, OmegaSource(1, x.device, seed=1))
    torch.testing.assert_close(two, 2 * a)


@pytest.mark.parametrize("channels", [2, 6])
def test_maxmin_jacobian_norm(channels):
    layer = MaxMin()
    assert max_jacobian_norm(layer, (channels, 3, 3)) <= layer.lipschitz_bound() + TOL


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_maxmin_training_shortcut_sorts_and_routes_gradients_exactly(memory_format):
    """The shortcut's values and gradients are the certified ones to the bit, ties included:
    each incoming gradient goes to the input it came from (the first of a tied pair takes
    the max)."""
    torch.manual_seed(0)
    x = torch.randn(3, 8, 5, 5).round(decimals=1).contiguous(memory_format=memory_format)
    grad = torch.randn_like(x)
    a, b = x.chunk(2, dim=1)
    assert bool((a == b).any()), "the test wants ties"
    layer = MaxMin()
    shortcut_x = x.clone().requires_grad_()
    with fast_training(layer):
        out = layer(shortcut_x)
    out.backward(grad)
    assert torch.equal(out.detach(), layer(x))
    first = a >= b
    to_max, to_min = grad.chunk(2, dim=1)
    expected = torch.cat(
        (torch.where(first, to_max, to_min), torch.where(first, to_min, to_max)), 1
    )
    assert torch.equal(shortcut_x.grad, expected)


def test_maxmin_rejects_odd_channels():
    with pytest.raises(ValueError, match="even number of channels"):
        MaxMin()(torch.zeros(1, 3, 2, 2))


def test_standardize_bound_with_imagenet_statistics():
    layer = Standardize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    exact = check_affine(layer, (3, 2, 2))
    assert exact == pytest.approx(1.0, abs=1e-6)


def test_standardize_rejects_bad_statistics():
    with pytest.raises(ValueError, match="positive"):
        Standardize((0.5,), (0.0,))
    with pytest.raises(ValueError, match="channels"):
        Standardize((0.5, 0.5), (1.0,))


@pytest.mark.parametrize("window", [(1, 1), (2, 2), (3, 3), (7, 7), (2, 3)])
def test_scaled_pooling_preserves_norm_bound(window):
    layer = ScaledAvgPool2d(window)
    exact = check_affine(layer, (2, 2 * window[0], 3 * window[1]))
    assert exact == pytest.approx(1.0, abs=1e-5)


def test_invertible_downsample_and_flatten_are_orthogonal():
    layer = LipschitzSequential(InvertibleDownsample(2), Flatten())
    exact = check_affine(layer, (2, 4, 6))
    assert exact == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(("d_in", "k"), [(5, 2), (16, 10), (64, 3), (3, 7)])
def test_normalized_linear_bound(d_in, k):
    torch.manual_seed(d_in)
    head = NormalizedLinear(d_in, k)
    check_affine_any_weights(head, (d_in,))
    assert head.lipschitz_bound() <= 1.0


def test_strided_aol_conv_matches_torch_reference():
    """The effective kernel is what F.conv2d would apply: guards the forward wiring."""
    torch.manual_seed(0)
    layer = AOLConv2d(2, 4, 3, stride=2)
    x = torch.rand(3, 2, 7, 7)
    expected = F.conv2d(x, layer.effective_weight(), layer.bias, stride=2, padding=1)
    torch.testing.assert_close(layer(x), expected)
