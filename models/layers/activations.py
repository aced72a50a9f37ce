"""MaxMin (GroupSort with groups of two): a 1-Lipschitz, gradient-norm-preserving activation.

Anil, Lucas & Grosse, "Sorting out Lipschitz function approximation", ICML 2019. Each output
is a sort of a pair of inputs, a piecewise permutation, so ``‖MaxMin(x) − MaxMin(y)‖₂ ≤
‖x − y‖₂``.
"""

from __future__ import annotations

import torch

from models.layers.base import LipschitzModule


class MaxMin(LipschitzModule):
    """Splits the channels into halves ``a, b`` and returns ``[max(a, b), min(a, b)]``.

    Bound: 1 (a pairwise sort is 1-Lipschitz in L2). Training steps inside
    :func:`models.layers.fast_training` compute ``max = b + relu(a − b)``,
    ``min = a − relu(a − b)``: the same function in exact arithmetic, with one cheap
    backward in place of the masks of ``maximum`` and ``minimum``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % 2:
            raise ValueError(f"MaxMin needs an even number of channels, got {x.shape[1]}")
        a, b = x.chunk(2, dim=1)
        if self.takes_training_shortcuts():
            excess = torch.relu(a - b)
            return torch.cat((b + excess, a - excess), dim=1)
        return torch.cat((torch.maximum(a, b), torch.minimum(a, b)), dim=1)

    def lipschitz_bound(self) -> float:
        return 1.0
