"""The numeric bound helpers: upper bounds that survive rounding."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from models.lipschitz_bounds import (
    conv_operator_norm_bound,
    convex_weights,
    float32_cast_margin,
    matrix_spectral_norm_bound,
    product_upper_bound,
)
from tests.models.operators import exact_affine_norm


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "size"),
    [
        (k, s, p, size)
        for k, s, size in itertools.product([1, 2, 3, 5], [1, 2, 3], [(4, 4), (7, 5)])
        for p in sorted({0, k // 2, k - 1})
        if min(size) + 2 * p >= k
    ],
)
def test_fft_bound_covers_every_zero_padding_and_stride(kernel, stride, padding, size):
    g = torch.Generator().manual_seed(kernel * 31 + stride)
    weight = torch.randn(3, 2, kernel, kernel, generator=g)

    def conv(x):
        return F.conv2d(x, weight, stride=stride, padding=padding)

    exact = exact_affine_norm(conv, (2, *size))
    assert exact <= conv_operator_norm_bound(weight, size) * (1 + 1e-6)


def test_fft_bound_needs_the_enlarged_torus():
    """The circular norm on the n × n torus alone can UNDER-estimate the zero-padded norm;
    the bound uses n + k − 1. This kernel is a case where the difference shows."""
    weight = torch.tensor([[[[0.0, -1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]]])
    size = (4, 4)
    exact = exact_affine_norm(lambda x: F.conv2d(x, weight, padding=1), (1, *size))
    spectrum = torch.fft.fft2(weight.double(), s=size)
    naive = spectrum.abs().max().item()
    assert naive < exact  # the naive torus misses it
    assert exact <= conv_operator_norm_bound(weight, size)


def test_fft_bound_covers_padding_k_minus_one():
    """A "same" padding k // 2 needs only an n + k // 2 torus; padding k − 1, which the bound
    also claims, needs all of n + k − 1. Random kernels rarely show it; this one does (~10 %)."""
    weight = torch.tensor([[[[-1.0, 1.0, -1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, -1.0]]]])
    size = (4, 4)
    exact = exact_affine_norm(lambda x: F.conv2d(x, weight, padding=2), (1, *size))
    short_torus = torch.fft.fft2(weight.double(), s=(5, 5)).abs().max().item()
    assert short_torus < 0.95 * exact
    assert exact <= conv_operator_norm_bound(weight, size)


def test_matrix_bound_is_above_the_singular_value():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        a = torch.randn(7, 11, generator=g)
        assert matrix_spectral_norm_bound(a) >= torch.linalg.svdvals(a.double())[0].item()


def test_float32_cast_margin_keeps_an_orthogonal_matrix_contractive():
    g = torch.Generator().manual_seed(0)
    for n in (16, 64, 256):
        q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
        shrunk = (q * (1 - float32_cast_margin(1, n, n))).float()
        assert torch.linalg.svdvals(shrunk.double())[0].item() <= 1.0


def test_product_rounds_up():
    thirds = [1 / 3] * 7
    exact = math.prod(Fraction(t) for t in thirds)
    assert Fraction(product_upper_bound(thirds)) >= exact
    assert product_upper_bound([1.0] * 50 + [2.0]) == 2.0
    with pytest.raises(ValueError, match="non-negative"):
        product_upper_bound([1.0, -0.5])
    with pytest.raises(ValueError, match="finite"):
        product_upper_bound([float("nan")])


def exact_sum(w: torch.Tensor) -> Fraction:
    return sum((Fraction(v) for v in w.tolist()), Fraction(0))


def test_convex_weights_never_sum_above_one():
    g = torch.Generator().manual_seed(0)
    above = 0
    for trial in range(3000):
        logits = torch.randn(2 + trial % 4, generator=g) * (10.0 ** (trial % 5 - 2))
        plain = torch.softmax(logits, dim=0)
        above += exact_sum(plain) > 1
        w = convex_weights(logits)
        assert exact_sum(w) <= 1
        assert (w >= 0).all()
    assert above > 0, "the trial set should contain softmax sums above 1 to be meaningful"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_convex_weights_see_an_excess_a_float64_sum_rounds_away(dtype):
    # softmax([0, -38]) = [1.0, 3.1e-17]: float64 sums it to exactly 1.0, the real sum is above.
    logits = torch.tensor([0.0, -38.0], dtype=dtype)
    plain = torch.softmax(logits, dim=0)
    assert float(plain.double().sum()) == 1.0 and exact_sum(plain) > 1
    w = convex_weights(logits)
    assert exact_sum(w) <= 1 and w.dtype == dtype
    assert float(w[0]) == math.nextafter(1.0, 0.0) if dtype == torch.float64 else w[0] < 1


def test_convex_weights_keep_softmax_gradients():
    logits = torch.tensor([0.3, -1.2, 2.0], requires_grad=True)
    target = torch.tensor([1.0, 2.0, 3.0])
    (convex_weights(logits) * target).sum().backward()
    expected = torch.autograd.functional.jacobian(lambda v: torch.softmax(v, 0), logits.detach())
    torch.testing.assert_close(logits.grad, expected.T @ target)
