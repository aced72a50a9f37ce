"""The model protocol: what every certifiable network of :mod:`models` offers.

HyCAS (:class:`models.hycas.HyCAS`, which the Lipschitz baseline also is) and the plain CNN
(:class:`models.baselines.PlainCNN`) implement :class:`CertifiableModel` explicitly; the
repository, training, evaluation, the workers and the gateway read these members and nothing
else. :mod:`certify` works with any classifier mapping ``[B, C, H, W]`` to ``[B, K]`` and reads
only ``stochastic`` and ``lipschitz_bound()`` (see :mod:`certify.classifier`).

This module imports torch and the card's types only, so :mod:`certify` and the gateway can
name the protocol without building networks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, Self

import torch

from models.card import Normalization

OmegaSegments = Sequence[tuple[torch.Generator, int]]
"""Ω drawn per segment of a batch: ``(generator, count)`` pairs, in batch order, whose counts
add up to the batch size. Each segment's samples draw their Ω from their own generator exactly
as a batch of ``count`` samples alone would, so several jobs can share one forward pass."""

OmegaGenerator = torch.Generator | OmegaSegments
"""What ``forward(x, generator=...)`` accepts: one generator for the whole batch, or segments."""

FrozenOmegaSegments = Sequence[tuple[int, int]]
"""Frozen Ω per segment of a batch: ``(omega_seed, count)`` pairs, in batch order, whose counts
add up to the batch size. Each segment's samples share the one Ω of its seed, exactly as a batch
of ``count`` samples called with ``omega_seed=seed`` alone would, so several margin
certificates can share one forward pass."""

OmegaSeed = int | FrozenOmegaSegments
"""What ``forward(x, omega_seed=...)`` accepts: one seed for the whole batch, or segments."""


class CertifiableModel(Protocol):
    """A classifier ``x ↦ s(x; Ω)`` from ``[0, 1]^{C×H×W}`` to logits, as the certifiers see it."""

    input_shape: tuple[int, int, int]
    """``(C, H, W)`` of one input in the ``[0, 1]`` input space (where radii are measured)."""

    num_classes: int
    """``K``, the number of logits."""

    stochastic: bool
    """Whether the forward pass draws internal randomness Ω (independent of the input). When
    false, ``generator`` and ``omega_seed`` are accepted and have no effect."""

    def __call__(
        self,
        x: torch.Tensor,
        *,
        generator: OmegaGenerator | None = None,
        omega_seed: OmegaSeed | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, K]`` of a float32 batch ``[B, *input_shape]`` (a module's ``forward``):
        a fresh Ω per sample from ``generator`` (a generator, or :data:`OmegaSegments`), one Ω
        for the whole batch from ``omega_seed`` (or one per segment,
        :data:`FrozenOmegaSegments`), else the frozen seed of :meth:`frozen` or the
        default generator. ``generator`` and ``omega_seed`` together are refused."""
        ...

    def frozen(self, seed: int) -> AbstractContextManager[Any]:
        """A context in which calls without ``generator``/``omega_seed`` use the Ω of ``seed``
        (a deterministic classifier); state on the module, so threads pass ``omega_seed``."""
        ...

    def lipschitz_bound(self) -> float | None:
        """A certified L2 Lipschitz bound of input → logits for every Ω, at the weights held
        now; ``None`` when the network has none (it is then certified by smoothing only)."""
        ...

    def normalization(self) -> Normalization:
        """The per-channel ``(x − mean) · scale`` the network applies to its input itself."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: ``architecture``, ``input_shape``, ``num_classes``, ``config``,
        ``trainable_parameters`` and ``lipschitz_bound`` (``None`` when there is none)."""
        ...


def describe_network(
    model: torch.nn.Module, architecture: str, config: dict[str, Any], **more: Any
) -> dict[str, Any]:
    """What :meth:`CertifiableModel.describe` gives for a network that is a ``torch.nn.Module``
    implementing the protocol: its ``architecture`` and ``config``, ``input_shape``,
    ``num_classes``, the count of trainable parameters and ``lipschitz_bound()``, then
    ``more`` (e.g. HyCAS's per-layer bounds)."""
    return {
        "architecture": architecture,
        "input_shape": list(model.input_shape),
        "num_classes": model.num_classes,
        "config": config,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "lipschitz_bound": model.lipschitz_bound(),
        **more,
    }


def refuse_two_omega_sources(generator: object, omega_seed: object) -> None:
    """The protocol's rule for a forward pass: a ``generator`` (fresh Ω) and an ``omega_seed``
    (frozen Ω) together are refused with a ``ValueError``."""
    if generator is not None and omega_seed is not None:
        raise ValueError("give either a generator (fresh Ω) or a seed (frozen Ω), not both")


class DeterministicModel:
    """What the classifiers without internal randomness and without a certified bound share
    (the plain CNN, an imported ONNX graph): no Ω, so ``frozen(seed)`` is the model itself; no
    certified Lipschitz bound, so ``lipschitz_bound()`` is ``None`` and the margin certificate
    refuses them; the forward pass takes the protocol's keywords, refuses both Ω sources at
    once (:func:`refuse_two_omega_sources`) and ignores either, and the logits come from
    :meth:`logits`. Mixed in before ``nn.Module`` and beside :class:`CertifiableModel`."""

    stochastic = False

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits ``[B, classes]`` of a float32 batch ``[B, C, H, W]`` in ``[0, 1]``."""
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        *,
        generator: OmegaGenerator | None = None,
        omega_seed: OmegaSeed | None = None,
    ) -> torch.Tensor:
        refuse_two_omega_sources(generator, omega_seed)
        return self.logits(x)

    @contextmanager
    def frozen(self, seed: int) -> Iterator[Self]:
        yield self

    def lipschitz_bound(self) -> None:
        return None
