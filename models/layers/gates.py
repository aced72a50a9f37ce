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

from models.layers.base import (
    LipschitzModule,
    ZeroPaddedConvolution,
    apply_layer,
    to_channels_last,
)
from models.layers.omega import OmegaSource
from models.lipschitz_bounds import ceil_to_float, convex_weights

FLOOR_MARGIN = 1e-6
"""Relative room added to a floor when the logits are set, so that the float32 softmax of the
new logits (rounding error ~1e-7) still lands at or above the floor."""


def raise_to_floors(logits: torch.Tensor, floors: list[float]) -> bool:
    """Change ``logits`` in place (the least, in proportion) so that ``softmax(logits)_i ≥
    floors[i]``; leave them untouched when it already holds. Returns whether they changed.

    The weights below their floor are set to it (plus :data:`FLOOR_MARGIN`) and the others
    scaled down together to keep the sum at 1, repeated while scaling pushes another one
    under its floor; the new logits are the logarithms of the new weights. Any convex weights
    keep a gate's or residual's bound (it is computed from whatever weights they hold), so a
    floor changes what is learned, never what is certified.
    """
    if sum(floors) > 1:
        raise ValueError(f"floors {floors} sum to more than 1")
    current = convex_weights(logits.detach()).tolist()
    if all(w >= f for w, f in zip(current, floors, strict=True)):
        return False
    weights = torch.softmax(logits.detach().double(), dim=0).tolist()
    targets = [f * (1 + FLOOR_MARGIN) for f in floors]
    pinned: set[int] = set()
    while True:
        free = [i for i in range(len(weights)) if i not in pinned]
        room = 1 - sum(targets[i] for i in pinned)
        scale = room / sum(weights[i] for i in free)
        below = {i for i in free if weights[i] * scale < targets[i]}
        if not below:
            break
        pinned |= below
    new = [targets[i] if i in pinned else weights[i] * scale for i in range(len(weights))]
    with torch.no_grad():
        logits.copy_(torch.tensor(new, dtype=torch.float64).log())
    return True


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
    Training steps inside :func:`models.layers.fast_training` take the plain softmax, run
    the convolution branches of one geometry as one convolution with kernel ``Σ w_i K_i``, and
    let the other branches fold their weight into their own (see
    :meth:`LipschitzModule.weighted_training_output`).
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
            out = F.conv2d(
                to_channels_last(x), kernel, bias, stride=geometry[1], padding=geometry[0] // 2
            )
        for i, branch in enumerate(self.branches):
            if i in convolutions:
                continue
            if getattr(branch, "draws_omega", False):
                out = torch.addcmul(out, w[i], apply_layer(branch, x, omega))
            else:
                out = out + branch.weighted_training_output(x, w[i])
        return out

    def lipschitz_bound(self) -> float:
        return _weighted_bound(
            self.weights().detach(), [b.lipschitz_bound() for b in self.branches]
        )

    def keep_weights_above(self, floor: float) -> bool:
        """Raise every branch weight to at least ``floor`` (see :func:`raise_to_floors`)."""
        return raise_to_floors(self.gate_logits, [floor] * len(self.branches))


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

    def beta(self) -> float:
        """``β``, the certified weight of the body."""
        return float(self.weights().detach()[1])

    def keep_beta_above(self, floor: float) -> bool:
        """Raise ``β`` to at least ``floor`` (see :func:`raise_to_floors`)."""
        return raise_to_floors(self.mix_logits, [0.0, floor])
