"""Training objectives: cross-entropy under Gaussian noise, and a Lipschitz-margin term.

Lipschitz-margin training (Tsuzuku, Sato & Sugiyama 2018): for an L-Lipschitz logit map a
margin ``z_y − max_{j≠y} z_j > √2·L·r`` certifies radius ``r``. Subtracting that offset from the
true logit before the softmax makes the cross-entropy small only once the margin exceeds it.
A Lipschitz network's logits are small (they move at most ``L`` per unit of input), so the
logits are multiplied by a scale ``t`` (an inverse temperature) before the softmax.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def margin_offset(radius: float, lipschitz: float) -> float:
    """``√2·L·r``: the logit margin that certifies radius ``r`` for an L-Lipschitz network."""
    return math.sqrt(2.0) * lipschitz * radius


def margin_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, *, offset: float, logit_scale: float
) -> torch.Tensor:
    """``CE(t · (z − offset · e_y), y)``, averaged over the batch (``offset = 0``: scaled CE)."""
    shifted = logits - offset * F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    return F.cross_entropy(logit_scale * shifted, labels)
