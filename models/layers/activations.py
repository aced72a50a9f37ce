"""MaxMin (GroupSort with groups of two): a 1-Lipschitz, gradient-norm-preserving activation.

Anil, Lucas & Grosse, "Sorting out Lipschitz function approximation", ICML 2019. Each output
is a sort of a pair of inputs, a piecewise permutation, so ``‖MaxMin(x) − MaxMin(y)‖₂ ≤
‖x − y‖₂``.
"""

from __future__ import annotations

import torch

from models.layers.base import LipschitzModule


class _PairSort(torch.autograd.Function):
    """``[max(a, b), min(a, b)]`` of the channel halves of ``x``, keeping only which of each
    pair came first for the backward pass (a permutation of the incoming gradient).

    The winners are kept as a 0/1 mask in ``x``'s dtype and the gradient routed with
    ``lerp`` (with a weight of exactly 0 or 1 it returns one input unchanged): boolean masks
    and ``torch.where`` take a scalar path on CPU, several times slower on these strided
    channel halves. Identical results for finite gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        half = a.shape[1]
        out = torch.empty_like(x)
        torch.maximum(a, b, out=out[:, :half])
        torch.minimum(a, b, out=out[:, half:])
        first = torch.ge(a, b, out=torch.empty_like(a))
        ctx.save_for_backward(first)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (first,) = ctx.saved_tensors
        half = first.shape[1]
        to_max, to_min = grad[:, :half], grad[:, half:]
        grad_x = torch.empty_like(grad)
        torch.lerp(to_min, to_max, first, out=grad_x[:, :half])
        torch.lerp(to_max, to_min, first, out=grad_x[:, half:])
        return grad_x


class MaxMin(LipschitzModule):
    """Splits the channels into halves ``a, b`` and returns ``[max(a, b), min(a, b)]``.

    Bound: 1 (a pairwise sort is 1-Lipschitz in L2). Training steps inside
    :func:`models.layers.fast_training` compute the same values into one output and keep a
    0/1 mask of the winners for the backward pass, which routes each gradient to the
    input it came from (no intermediate maps, no concatenation).
    """

    constant_bound = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % 2:
            raise ValueError(f"MaxMin needs an even number of channels, got {x.shape[1]}")
        if self.takes_training_shortcuts():
            return _PairSort.apply(x)
        a, b = x.chunk(2, dim=1)
        return torch.cat((torch.maximum(a, b), torch.minimum(a, b)), dim=1)
