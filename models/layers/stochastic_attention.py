"""Randomized attention noise: input-independent attention masks and additive noise from Ω.

The paper's attention multiplies features by ``sigmoid(conv(a))`` computed from the input, a
product of two input-dependent terms that no Lipschitz bound covers. Here the mask is a
learned attention map perturbed by Ω and never looks at the input:

``m = sigmoid(θ_c + φ_hw + τ (g_c + g_hw))``,  ``y = m ⊙ x + s ξ``,

with ``g_c``, ``g_hw``, ``ξ`` standard normals drawn from Ω. For every draw, ``m`` is a fixed
diagonal with entries in [0, 1] and ``s ξ`` a constant, so ``x ↦ y`` is 1-Lipschitz.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.layers.base import LipschitzModule
from models.layers.omega import OmegaSource


class _NoisyMask(torch.autograd.Function):
    """``sigmoid(c + p) ⊙ x + s ξ`` for logits ``c`` per channel and ``p`` per position (a
    training step's shortcut): the mask is computed and the noise added in place, and the
    backward pass reuses its own buffers (``∂/∂logits = g ⊙ x ⊙ m (1 − m)``)."""

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        channel: torch.Tensor,
        spatial: torch.Tensor,
        noise: torch.Tensor | None,
        noise_std: float,
    ) -> torch.Tensor:
        if torch.broadcast_shapes(channel.shape, spatial.shape) == x.shape:
            mask = torch.add(channel, spatial, out=torch.empty_like(x)).sigmoid_()  # x's layout
        else:
            mask = torch.add(channel, spatial).sigmoid_()
        y = mask * x
        if noise is not None:
            y.add_(noise, alpha=noise_std)
        ctx.save_for_backward(x, mask)
        ctx.logit_shapes = (channel.shape, spatial.shape)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, mask = ctx.saved_tensors
        grad_x = grad * mask if ctx.needs_input_grad[0] else None
        grad_logits = grad * x
        torch.ops.aten.sigmoid_backward.grad_input(grad_logits, mask, grad_input=grad_logits)
        channel_shape, spatial_shape = ctx.logit_shapes
        return (
            grad_x,
            grad_logits.sum_to_size(channel_shape),
            grad_logits.sum_to_size(spatial_shape),
            None,
            None,
        )


class StochasticAttention(LipschitzModule):
    """Channel-and-spatial attention mask in [0, 1] with noise from Ω, plus additive noise.

    Bound: 1 for every draw of Ω (a diagonal map with entries in [0, 1], then a translation).
    """

    constant_bound = 1.0
    draws_omega = True

    def __init__(
        self,
        channels: int,
        input_size: tuple[int, int],
        *,
        temperature: float,
        noise_std: float,
    ) -> None:
        super().__init__()
        if not all(math.isfinite(v) and v >= 0 for v in (temperature, noise_std)):
            raise ValueError(
                "attention temperature and noise_std must be finite and ≥ 0, "
                f"got {temperature}, {noise_std}"
            )
        self.channels = channels
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.temperature = float(temperature)
        self.noise_std = float(noise_std)
        self.channel_logits = nn.Parameter(torch.full((channels,), 1.0))
        self.spatial_logits = nn.Parameter(torch.full(self.input_size, 1.0))

    def forward(self, x: torch.Tensor, omega: OmegaSource) -> torch.Tensor:
        h, w = self.input_size
        channel = self.channel_logits.view(1, -1, 1, 1)
        spatial = self.spatial_logits.view(1, 1, h, w)
        if self.temperature > 0:
            g_c = omega.normal(self.channels).view(-1, self.channels, 1, 1)
            g_hw = omega.normal(h, w).view(-1, 1, h, w)
        if self.takes_training_shortcuts():
            if self.temperature > 0:
                # Summed per channel and per position first: one full-size sum, not three.
                channel = channel + self.temperature * g_c
                spatial = spatial + self.temperature * g_hw
            noise = omega.normal(self.channels, h, w) if self.noise_std > 0 else None
            return _NoisyMask.apply(x, channel, spatial, noise, self.noise_std)
        if self.temperature > 0:
            logits = channel + spatial + self.temperature * (g_c + g_hw)
        else:
            logits = channel + spatial
        y = torch.sigmoid(logits) * x
        if self.noise_std > 0:
            y = y + self.noise_std * omega.normal(self.channels, h, w)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, input_size={self.input_size}, temperature={self.temperature}, "
            f"noise_std={self.noise_std}"
        )
