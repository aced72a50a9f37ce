"""Combinations of branches that keep a certified bound: convex gates and residuals.

For maps ``f_i`` with bounds ``L_i`` and scalar weights ``w_i ≥ 0``,
``‖Σ w_i f_i(x) − Σ w_i f_i(y)‖ ≤ (Σ w_i L_i) ‖x − y‖``. With ``Σ w_i ≤ 1`` and ``L_i ≤ 1``
the combination is 1-Lipschitz. The weights are SCALARS per branch: a per-channel softmax
gate mixes branches differently per channel and is only √(number of branches)-Lipschitz.
"""

from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from models.bounds import ceil_to_float, convex_weights
from models.layers.base import LipschitzModule, ZeroPaddedConvolution, apply_layer
from models.layers.omega import OmegaSource


def _weighted_bound(weights: torch.Tensor, bounds: list[float]) -> float:
    """``Σ w_i L_i`` in exact arithmetic from the float32 weights, rounded up."""
    total = sum(
        (Fraction(float(w)) * Fraction(b) for w, b in zip(weights.tolist(), bounds, strict=True)),
        Fraction(0),
    )
    return ceil_to_float(total)


class ConvexGate(LipschitzModule):
    """``Σ_i w_i f_i(x) + b`` with ``w = softmax(g)`` over scalar logits, one per branch.

    Bound: ``Σ_i w_i L_i`` (exact arithmetic on the float32 weights, which sum to ≤ 1).
    Training steps inside :func:`models.layers.fast_training` take the plain softmax and run
    the convolution branches of one geometry as one convolution with kernel ``Σ w_i K_i``.
    """

    def __init__(self, branches: list[LipschitzModule], out_channels: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.gate_logits = nn.Parameter(torch.zeros(len(branches)))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.draws_omega = any(getattr(b, "draws_omega", False) for b in branches)

    def weights(self) -> torch.Tensor:
        return self.cached_when_frozen(lambda: convex_weights(self.gate_logits))

    def forward(self, x: torch.Tensor, omega: OmegaSource | None = None) -> torch.Tensor:
        if self.takes_training_shortcuts():
            return self._training_forward(x, omega)
        w = self.weights()
        out = sum(w[i] * apply_layer(b, x, omega) for i, b in enumerate(self.branches))
        return out + self.bias.view(1, -1, 1, 1)

    def _training_forward(self, x: torch.Tensor, omega: OmegaSource | None) -> torch.Tensor:
        """The same sum with the convolutions sharing the first one's geometry merged."""
        w = torch.softmax(self.gate_logits, dim=0)
        convolutions = [
            i for i, b in enumerate(self.branches) if isinstance(b, ZeroPaddedConvolution)
        ]
        if convolutions:
            first = self.branches[convolutions[0]]
            geometry = (first.kernel_size, first.stride)
            convolutions = [
                i
                for i in convolutions
                if (self.branches[i].kernel_size, self.branches[i].stride) == geometry
            ]
        kernel, bias = None, self.bias
        for i in convolutions:
            branch = self.branches[i]
            branch.check_input_size(x)
            term = w[i] * branch.training_kernel()
            kernel = term if kernel is None else kernel + term
            if branch.bias is not None:
                bias = bias + w[i] * branch.bias
        if kernel is None:
            out = bias.view(1, -1, 1, 1)
        else:
            out = F.conv2d(x, kernel, bias, stride=geometry[1], padding=geometry[0] // 2)
        for i, branch in enumerate(self.branches):
            if i not in convolutions:
                out = torch.addcmul(out, w[i], apply_layer(branch, x, omega))
        return out

    def lipschitz_bound(self) -> float:
        return _weighted_bound(
            self.weights().detach(), [b.lipschitz_bound() for b in self.branches]
        )


class ConvexResidual(LipschitzModule):
    """``(1 − β) x + β f(x)`` with ``β`` a learned scalar in [0, 1].

    Bound: ``(1 − β) + β L_f`` (≤ 1 when ``L_f ≤ 1``), exact on the float32 weights.
    """

    def __init__(self, body: LipschitzModule, initial_beta: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < initial_beta < 1.0:
            raise ValueError(f"initial_beta must lie in (0, 1), got {initial_beta}")
        self.body = body
        logit = float(torch.logit(torch.tensor(initial_beta)))
        self.mix_logits = nn.Parameter(torch.tensor([0.0, logit]))
        self.draws_omega = getattr(body, "draws_omega", False)

    def weights(self) -> torch.Tensor:
        return self.cached_when_frozen(lambda: convex_weights(self.mix_logits))

    def forward(self, x: torch.Tensor, omega: OmegaSource | None = None) -> torch.Tensor:
        body = apply_layer(self.body, x, omega)
        if self.takes_training_shortcuts():
            beta = torch.softmax(self.mix_logits, dim=0)[1]
            return torch.lerp(x, body, beta)
        w = self.weights()
        return w[0] * x + w[1] * body

    def lipschitz_bound(self) -> float:
        return _weighted_bound(self.weights().detach(), [1.0, self.body.lipschitz_bound()])


class AdditiveSkip(LipschitzModule):
    """``x + f(x)``: the one place a HyCAS network may exceed 1.

    Bound: ``1 + L_f`` (triangle inequality).
    """

    def __init__(self, body: LipschitzModule) -> None:
        super().__init__()
        self.body = body
        self.draws_omega = getattr(body, "draws_omega", False)

    def forward(self, x: torch.Tensor, omega: OmegaSource | None = None) -> torch.Tensor:
        return x + apply_layer(self.body, x, omega)

    def lipschitz_bound(self) -> float:
        return ceil_to_float(Fraction(1) + Fraction(self.body.lipschitz_bound()))
