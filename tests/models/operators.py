"""Exact operator norms of small layers, and adversarial weight pushes, for the bound tests."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from models import HyCAS
from models.layers import OmegaSource, apply_layer

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


def check_layer_bounds_along(model: HyCAS, x: torch.Tensor) -> None:
    """Each top-level layer of a HyCAS ``model``, at the inputs it receives from the batch
    ``x`` inside the network and with its real sizes: the exact Jacobian norm (by SVD, each
    sample with its own Ω draw) stays under the layer's certified bound."""
    omega = OmegaSource(x.shape[0], x.device, seed=0)
    for name, layer in model.body.layers.items():
        bound = layer.lipschitz_bound()
        for draw, sample in enumerate(x):

            def f(v, layer=layer, draw=draw):
                return apply_layer(layer, v, OmegaSource(1, v.device, seed=draw))

            exact = jacobian_norm_at(f, sample)
            assert exact <= bound + 1e-5, f"{name}: Jacobian norm {exact} > bound {bound}"
        with torch.no_grad():
            x = apply_layer(layer, x, omega)


def adversarial_ratio(
    model: HyCAS, starts: int, steps: int, seed: int = 0, omega_seed: int = 0
) -> float:
    """Gradient ascent on ‖f(x) − f(y)‖ / ‖x − y‖ over input pairs, with a frozen Ω."""
    g = torch.Generator().manual_seed(seed)
    shape = model.input_shape
    x = torch.rand(starts, *shape, generator=g).requires_grad_()
    delta = (0.05 * torch.randn(starts, *shape, generator=g)).requires_grad_()
    opt = torch.optim.Adam([x, delta], lr=0.02)
    best = 0.0
    for _ in range(steps):
        fx = model(x, omega_seed=omega_seed)
        fy = model(x + delta, omega_seed=omega_seed)
        ratio = (fx - fy).norm(dim=1) / delta.flatten(1).norm(dim=1)
        best = max(best, float(ratio.detach().max()))
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
    return best
