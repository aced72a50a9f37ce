"""The internal randomness Ω of a HyCAS forward pass.

Ω never depends on the input: it is drawn from a generator or a seed, layer by layer in a
fixed order, so the same generator state (or seed) gives the same Ω.
"""

from __future__ import annotations

import torch

from models.protocol import OmegaGenerator, OmegaSeed, refuse_two_omega_sources


class OmegaSource:
    """Standard normal draws for the stochastic layers of one forward pass.

    Two modes:
    - fresh (``seed is None``): every sample of the batch gets its own Ω, drawn on ``device``
      from ``generator`` (or the device's default generator); ``generator`` may also be
      segments ``[(g₁, n₁), (g₂, n₂), …]`` covering the batch in order, each segment drawing
      from its own generator exactly what a batch of ``nᵢ`` samples alone would draw;
    - frozen (``seed`` given): one Ω shared by the whole batch, drawn on the CPU from a
      generator seeded with ``seed`` and then moved to ``device``, so a frozen Ω is the same
      on every device; ``seed`` may also be segments ``[(s₁, n₁), (s₂, n₂), …]`` covering the
      batch in order, each segment sharing the Ω of its own seed.
    """

    def __init__(
        self,
        batch_size: int,
        device: torch.device,
        *,
        generator: OmegaGenerator | None = None,
        seed: OmegaSeed | None = None,
    ) -> None:
        refuse_two_omega_sources(generator, seed)
        self.batch_size = batch_size
        self.device = device
        self.generator: torch.Generator | None = None
        self.segments: tuple[tuple[torch.Generator, int], ...] | None = None
        if generator is None or isinstance(generator, torch.Generator):
            self.generator = generator
        else:
            self.segments = tuple((g, int(count)) for g, count in generator)
            _check_cover([count for _, count in self.segments], batch_size)
        self._frozen: torch.Generator | None = None
        self._frozen_segments: tuple[tuple[torch.Generator, int], ...] | None = None
        if isinstance(seed, int):
            self._frozen = torch.Generator("cpu").manual_seed(int(seed))
        elif seed is not None:
            self._frozen_segments = tuple(
                (torch.Generator("cpu").manual_seed(int(s)), int(count)) for s, count in seed
            )
            _check_cover([count for _, count in self._frozen_segments], batch_size)

    @property
    def frozen(self) -> bool:
        return self._frozen is not None or self._frozen_segments is not None

    def normal(self, *shape: int) -> torch.Tensor:
        """Standard normals of shape ``[B, *shape]`` (fresh, frozen segments) or ``[1, *shape]``
        (frozen)."""
        if self._frozen_segments is not None:
            draws = [
                torch.randn((1, *shape), generator=g, dtype=torch.float32).expand(count, *shape)
                for g, count in self._frozen_segments
            ]
            return torch.cat(draws).to(self.device)
        if self._frozen is not None:
            draw = torch.randn((1, *shape), generator=self._frozen, dtype=torch.float32)
            return draw.to(self.device)
        if self.segments is not None:
            draws = [
                torch.randn((count, *shape), generator=g, device=self.device, dtype=torch.float32)
                for g, count in self.segments
            ]
            return torch.cat(draws)
        return torch.randn(
            (self.batch_size, *shape),
            generator=self.generator,
            device=self.device,
            dtype=torch.float32,
        )


def _check_cover(counts: list[int], batch_size: int) -> None:
    if any(count < 1 for count in counts) or sum(counts) != batch_size:
        raise ValueError(f"Ω segments of {counts} samples do not cover a batch of {batch_size}")
