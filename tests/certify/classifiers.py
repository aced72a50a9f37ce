"""Classifiers whose smoothed and margin robustness is known in closed form.

- ``AffineClassifier``: logits ``W x + b`` computed in float64; its exact L2 distance to the
  decision boundary and its exact Lipschitz constant ``‖W‖₂`` are available.
- ``LinearBinaryClassifier``: logits ``[s, −s]`` with ``s = w·x + b``; under noise
  ``N(0, σ² I)`` the vote for the side of ``x`` is ``Φ(d/σ)`` with ``d = |s| / ‖w‖``, so the
  smoothed classifier's true certified radius is exactly ``d``.
- ``ConstantClassifier``: always the same class.
- ``FairCoinClassifier``: a stochastic model (``stochastic = True``) that ignores its input and
  flips a fair coin between two classes, drawing Ω from ``generator`` or ``omega_seed``.
"""

from __future__ import annotations

import torch


class AffineClassifier(torch.nn.Module):
    """Logits ``W x + b`` (float64 arithmetic) on flattened images."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight.to(torch.float64))
        self.register_buffer("bias", bias.to(torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).to(torch.float64) @ self.weight.T + self.bias

    def lipschitz_bound(self) -> float:
        """The exact L2 Lipschitz constant of ``x → W x + b``: the spectral norm of ``W``."""
        return float(torch.linalg.matrix_norm(self.weight, ord=2))

    def distance_to_boundary(self, x: torch.Tensor) -> float:
        """Exact L2 distance from ``x`` to the nearest point where another class wins."""
        logits = self(x.unsqueeze(0))[0]
        top = int(logits.argmax())
        gaps = logits[top] - logits
        normals = torch.linalg.vector_norm(self.weight[top] - self.weight, dim=1)
        return min(float(gaps[j] / normals[j]) for j in range(len(logits)) if j != top)


class LinearBinaryClassifier(AffineClassifier):
    """Logits ``[s, −s]``, ``s = w·x + b``: class 0 on the positive side of the hyperplane."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        w = w.to(torch.float64).flatten()
        super().__init__(torch.stack([w, -w]), torch.tensor([b, -b], dtype=torch.float64))

    @classmethod
    def through_point(
        cls, x: torch.Tensor, signed_distance: float, generator: torch.Generator
    ) -> LinearBinaryClassifier:
        """A random hyperplane at L2 distance ``|signed_distance|`` from ``x`` (class 0 if > 0)."""
        w = torch.randn(x.numel(), generator=generator, dtype=torch.float64)
        w /= torch.linalg.vector_norm(w)
        b = signed_distance - float(x.flatten().to(torch.float64) @ w)
        return cls(w, b)


class ConstantClassifier(torch.nn.Module):
    """Always predicts ``label`` among ``num_classes``; has no parameters (so runs on the CPU)."""

    def __init__(self, label: int, num_classes: int) -> None:
        super().__init__()
        self.label = label
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], self.num_classes)
        logits[:, self.label] = 1.0
        return logits


class FairCoinClassifier(torch.nn.Module):
    """Ignores the input; class 0 or 1 with probability 1/2 each, drawn from Ω."""

    stochastic = True

    def __init__(self) -> None:
        super().__init__()
        # A buffer gives the model a device, so ``.to("cuda")`` moves where Ω is drawn.
        self.register_buffer("classes", torch.arange(2))

    def forward(
        self,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        omega_seed: int | None = None,
    ) -> torch.Tensor:
        device = self.classes.device
        if omega_seed is not None:
            frozen = torch.Generator().manual_seed(omega_seed)
            coins = torch.randint(0, 2, (1,), generator=frozen).to(device).expand(x.shape[0])
        else:
            coins = torch.randint(0, 2, (x.shape[0],), generator=generator, device=device)
        return (coins.unsqueeze(1) == self.classes).to(torch.float32)

    def lipschitz_bound(self) -> float:
        """Every draw is constant in x, so any positive number bounds it; 1 is reported."""
        return 1.0
