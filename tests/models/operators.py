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


def jacobian_norm_at(f: Map, x: torch.Tensor) -> float:
    """The exact spectral norm of the Jacobian of ``f`` at the single input ``x`` (no batch
    dimension), by SVD of the materialised Jacobian."""
    jac = torch.autograd.functional.jacobian(lambda v: f(v.unsqueeze(0)).flatten(), x)
    return torch.linalg.matrix_norm(jac.reshape(jac.shape[0], -1).double(), ord=2).item()


def max_jacobian_norm(
    f: Map, input_shape: tuple[int, ...], points: int = 8, seed: int = 0
) -> float:
    """The largest spectral norm of the Jacobian of ``f`` over random points in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return max(jacobian_norm_at(f, torch.rand(*input_shape, generator=g)) for _ in range(points))


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
    """Gradient ascent on the WEIGHTS to maximise ‖f(x + d) − f(x)‖ / ‖d‖.

    The differences ``d`` are ascended together with the weights, so the weights are pushed
    along the layer's currently worst direction (towards its spectral norm), not only along
    random ones.
    """
    g = torch.Generator().manual_seed(seed)
    params = [p for p in module.parameters() if p.requires_grad]
    x = torch.rand(8, *input_shape, generator=g)
    d = (0.1 * torch.randn(8, *input_shape, generator=g)).requires_grad_()
    opt = torch.optim.Adam(params, lr=0.3)
    opt_d = torch.optim.Adam([d], lr=0.05)
    for _ in range(steps):
        ratio = (f(x + d) - f(x)).flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1)
        opt.zero_grad()
        opt_d.zero_grad()
        (-ratio.mean()).backward()
        opt.step()
        opt_d.step()
