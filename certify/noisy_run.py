"""One smoothing run's checked parameters and its sampler, shared by CERTIFY, PREDICT and the
sequential test (:mod:`certify.smoothing`, :mod:`certify.sequential`).

Internal to :mod:`certify`: it checks the parameters every smoothing run takes (the image,
σ, alpha, the batch size, the seed), builds the one :class:`NoisyVoteSampler` of the run,
and gives the fields every smoothing result records about the run. It certifies nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from certify.sampling import CancellationCheck, NoisyVoteSampler, ProgressCallback
from certify.validation import (
    float32_rounding_offset,
    validate_alpha,
    validate_count,
    validate_image,
    validate_seed,
    validate_sigma,
)


@dataclass(frozen=True)
class NoisyRunParameters:
    """The checked parameters of one smoothing run."""

    image: torch.Tensor
    """``float32(x)``: the point sampled around."""
    input_rounding: float
    """A bound on ``‖x − float32(x)‖₂`` (0 unless ``x`` is float64)."""
    sigma: float
    alpha: float
    batch_size: int
    seed: int
    """The caller's seed, or a fresh one drawn here."""

    @classmethod
    def validate(
        cls, x: Any, *, sigma: Any, alpha: Any, batch_size: Any, seed: Any
    ) -> NoisyRunParameters:
        """Each parameter checked by :mod:`certify.validation` (a ``ValueError`` names the one
        to change)."""
        image = validate_image(x)
        return cls(
            image=image,
            input_rounding=float32_rounding_offset(x, image),
            sigma=validate_sigma(sigma),
            alpha=validate_alpha(alpha),
            batch_size=validate_count("batch_size", batch_size),
            seed=validate_seed(seed),
        )

    def sampler(
        self,
        model: Any,
        samples_planned: int,
        progress: ProgressCallback | None,
        should_cancel: CancellationCheck | None,
    ) -> NoisyVoteSampler:
        """The run's sampler around ``image``, capped at ``samples_planned`` samples."""
        return NoisyVoteSampler(
            model,
            self.image,
            sigma=self.sigma,
            batch_size=self.batch_size,
            seed=self.seed,
            samples_planned=samples_planned,
            progress=progress,
            should_cancel=should_cancel,
        )

    def recorded(self, sampler: NoisyVoteSampler) -> dict[str, Any]:
        """The fields every smoothing result records about its run, by result field name."""
        return {
            "sigma": self.sigma,
            "alpha": self.alpha,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "input_shape": tuple(self.image.shape),
            "device": str(sampler.device),
            "torch_version": torch.__version__,
        }


def counts_tuple(counts: torch.Tensor) -> tuple[int, ...]:
    """Vote counts read to the host once, as plain integers."""
    return tuple(int(c) for c in counts.cpu().tolist())
