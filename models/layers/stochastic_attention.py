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


class StochasticAttention(LipschitzModule):
    """Channel-and-spatial attention mask in [0, 1] with noise from Ω, plus additive noise.

    Bound: 1 for every draw of Ω (a diagonal map with entries in [0, 1], then a translation).
    """

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
                # Summed per channel and per position first: one full-size sum, not three.
                channel = channel + self.temperature * g_c
                spatial = spatial + self.temperature * g_hw
                logits = channel + spatial
            else:
                logits = channel + spatial + self.temperature * (g_c + g_hw)
        else:
            logits = channel + spatial
        y = torch.sigmoid(logits) * x
        if self.noise_std > 0:
            noise = omega.normal(self.channels, h, w)
            if self.takes_training_shortcuts():
                return torch.add(y, noise, alpha=self.noise_std)
            y = y + self.noise_std * noise
        return y

    def lipschitz_bound(self) -> float:
        return 1.0

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, input_size={self.input_size}, temperature={self.temperature}, "
            f"noise_std={self.noise_std}"
        )
