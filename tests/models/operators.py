"""Exact operator norms of small layers, and adversarial weight pushes, for the bound tests."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Map = Callable[[torch.Tensor], torch.Tensor]


def affine_operator(f: Map, input_shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix ``A`` of an affine map ``f(x) = A x + b``: its Jacobian, by autograd.

    Differentiating (rather than subtracting ``f(0)``) keeps a huge bias from swamping the
    linear part in float32.
    """
    x = torch.zeros(*input_shape)
    jac = torch.autograd.functional.jacobian(
        lambda v: f(v.unsqueeze(0)).flatten(), x, vectorize=True
    )
    return jac.reshape(jac.shape[0], -1).double()


def exact_affine_norm(f: Map, input_shape: tuple[int, ...]) -> float:
    """The exact spectral norm of an affine map (SVD of its materialised matrix)."""
    return torch.linalg.matrix_norm(affine_operator(f, input_shape), ord=2).item()


def max_jacobian_norm(
    f: Map, input_shape: tuple[int, ...], points: int = 8, seed: int = 0
) -> float:
    """The largest spectral norm of the Jacobian of ``f`` over random points in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for _ in range(points):
        x = torch.rand(*input_shape, generator=g)
        jac = torch.autograd.functional.jacobian(lambda v: f(v.unsqueeze(0)).flatten(), x)
        worst = max(
            worst, torch.linalg.matrix_norm(jac.reshape(jac.shape[0], -1).double(), ord=2).item()
        )
    return worst


def randomize_large(module: nn.Module, scale: float = 1e3, seed: int = 0) -> None:
    """Overwrite every trainable parameter with large heavy-tailed random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            noise *= torch.rand(p.shape, generator=g) ** -1.0  # heavy tails
            p.copy_(noise)


def push_lipschitz_ratio(
    module: nn.Module, f: Map, input_shape: tuple[int, ...], steps: int = 15, seed: int = 0
) -> None:
    """Gradient ascent on the WEIGHTS to maximise ‖f(x) − f(y)‖ / ‖x − y‖ on random pairs."""
    g = torch.Generator().manual_seed(seed)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=0.3)
    for _ in range(steps):
        x = torch.rand(8, *input_shape, generator=g)
        y = x + 0.1 * torch.randn(8, *input_shape, generator=g)
        ratio = (f(x) - f(y)).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
        opt.zero_grad()
        (-ratio.mean()).backward()
        opt.step()
