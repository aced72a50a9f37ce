"""The streaming sampling engine: the base classifier's votes under Gaussian input noise.

For an input ``x``, the engine draws ``x + ε`` with ``ε ~ N(0, σ² I)`` batch by batch on the
model's device, runs the model, and counts the predicted classes (the argmax of the logits).
Only one batch of noisy inputs exists at a time, so memory is ``O(batch_size × input size)``
whatever the number of samples; the counts stay on the device and are read once per call,
never once per batch. Noise (``NOISE_STREAMS`` generators) and the model's internal randomness
Ω (one generator) are drawn on the model's device from generators seeded from the run's seed
(:mod:`certify.seeds`), so a run replays exactly on the same device, torch version and batch
size, whatever the number of threads.

The classifier (:mod:`certify.classifier`):

- a callable (usually a ``torch.nn.Module``) mapping float32 ``[B, C, H, W]`` to logits
  ``[B, K]``; its device is that of its first parameter or buffer, else the CPU;
- if it declares ``stochastic``, it draws a fresh Ω per sample from the keyword argument
  ``generator``, a ``torch.Generator`` on its device; otherwise it is called as ``model(x)``;
- it is called under ``torch.inference_mode()`` in whatever mode the caller left it (put a
  network with dropout or batch norm in ``eval()`` first unless that randomness is intended).

The forward seam: the engine never calls the model itself. Each batch goes through a
:data:`ForwardPass` ``(noisy batch, the run's Ω generator or None) → logits``, by default
:func:`model_forward` (the model, with ``generator=`` when it is stochastic). A caller may
inject another, e.g. a batcher that merges several runs' noisy batches into one forward pass
and hands the model one Ω generator per segment (``generator=[(g₁, n₁), (g₂, n₂), …]``, see
``models.protocol.OmegaSegments``), so each run's votes stay those its own seed gives.

Floating point: noisy inputs are float32 (``x + σ·z`` rounded once per coordinate). The
statistics downstream treat the votes as those of the base classifier at exactly Gaussian
inputs; Voráček & Hein (2023) show that a classifier built to read the rounding pattern of
``x + ε`` can break that assumption. This engine does not use their discretized sampler, so
certificates assume the model's decision does not depend on float32 rounding of its input.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import torch

from certify.classifier import is_stochastic
from certify.seeds import derive_seeds

NOISE_STREAMS = 4
"""Independent noise generators per run; each fills a fixed slice of every batch.

On the CPU a single generator draws serially and, for large inputs, would cost several
percent of a small CNN's forward pass; the slices of such batches are filled in parallel
threads. The count is fixed, not taken from the machine, so the same seed draws the same
noise whatever the core count and whether threads are used.
"""

THREADED_NOISE_MIN_ELEMENTS = 1 << 20
"""Noise values per batch from which the CPU fills the slices in parallel threads. Below it the
slices are filled one after the other in the calling thread: a thread hand-off costs more than
it saves on a small batch (1,000 samples of ``(1, 8, 8)`` draw in well under a millisecond),
and helper threads would compete with the forward pass's own thread pool."""

ForwardPass = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]
"""One forward pass of the engine: ``(noisy batch [B, C, H, W], the run's Ω generator, None for
a deterministic classifier) → logits [B, K]``."""

ProgressCallback = Callable[[int, int], None]
"""Called after each batch with ``(samples_done, samples_planned)``."""

CancellationCheck = Callable[[], bool]
"""Called before each batch; returning ``True`` stops the run with ``CertificationCancelled``."""


class CertificationCancelled(Exception):
    """Raised between batches when the caller's cancellation check returned ``True``."""

    def __init__(self, samples_done: int) -> None:
        super().__init__(f"certification cancelled after {samples_done} samples")
        self.samples_done = samples_done


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter or buffer; the CPU for a model with neither."""
    if isinstance(model, torch.nn.Module):
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            return tensor.device
    return torch.device("cpu")


def require_ieee_float32(device: torch.device) -> None:
    """On CUDA, turn off TensorFloat-32 for convolutions and matrix products, process-wide.

    PyTorch lets cuDNN run float32 convolutions in TF32 (10-bit mantissa) by default, which
    makes logits err by about 10⁻³ of their size instead of float32's 6·10⁻⁸; the margin
    certificate assumes the model's float32 logits (see :func:`certify.margin_certify`), and
    smoothing should count the votes of the same classifier. Certification therefore runs in
    IEEE float32, and so does anything else this process runs on CUDA afterwards. On other
    devices nothing changes (CPU float32 is IEEE).
    """
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def model_forward(model: Any) -> ForwardPass:
    """The default :data:`ForwardPass`: ``model(batch, generator=omega)`` for a stochastic
    classifier, ``model(batch)`` for a deterministic one (whose Ω generator is ``None``)."""
    if is_stochastic(model):
        return lambda batch, omega: model(batch, generator=omega)
    return lambda batch, omega: model(batch)


def check_logits(logits: Any, batch_size: int) -> torch.Tensor:
    """The model's output, refused unless it is a tensor of logits ``[batch_size, K]``."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != batch_size:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"the model must return logits [batch, classes]; for a batch of {batch_size} "
            f"it returned {shape}"
        )
    if logits.shape[1] < 1:
        raise ValueError("the model returned logits with zero classes")
    return logits


class NoisyVoteSampler:
    """Counts ``argmax f(x + ε; Ω)`` over fresh noise, streaming in batches on the model's device.

    One sampler serves one run: successive :meth:`count` calls continue the same noise and Ω
    streams, so the stages of CERTIFY (selection, estimation) or of a sequential test see
    independent samples, and ``samples_done`` and the progress callback span the whole run.
    ``samples_planned`` caps the run; the noisy batch buffer holds
    ``min(batch_size, samples_planned)`` inputs. ``forward`` replaces :func:`model_forward`
    (the forward seam, see the module docstring); it receives this run's Ω generator.
    """

    def __init__(
        self,
        model: Any,
        x: torch.Tensor,
        *,
        sigma: float,
        batch_size: int,
        seed: int,
        samples_planned: int,
        progress: ProgressCallback | None = None,
        should_cancel: CancellationCheck | None = None,
        forward: ForwardPass | None = None,
    ) -> None:
        self.model = model
        self._forward = model_forward(model) if forward is None else forward
        self.device = model_device(model)
        require_ieee_float32(self.device)
        self.sigma = sigma
        self.batch_size = batch_size
        self.samples_planned = samples_planned
        self.samples_done = 0
        self.num_classes: int | None = None
        self._progress = progress
        self._should_cancel = should_cancel
        self._x = x.to(self.device, torch.float32)
        omega_seed, *noise_seeds = derive_seeds(seed, 1 + NOISE_STREAMS)
        self._noise = [torch.Generator(device=self.device).manual_seed(s) for s in noise_seeds]
        self._omega = (
            torch.Generator(device=self.device).manual_seed(omega_seed)
            if is_stochastic(model)
            else None
        )
        # On CUDA the kernels are parallel already, and launching them from this thread keeps
        # them on the caller's current stream; threads only help on the CPU, for large batches.
        batch_elements = min(batch_size, samples_planned) * self._x.numel()
        self._noise_threads = (
            min(NOISE_STREAMS, torch.get_num_threads())
            if self.device.type == "cpu" and batch_elements >= THREADED_NOISE_MIN_ELEMENTS
            else 1
        )
        self._noisy_batch: torch.Tensor | None = None
        self._ones: torch.Tensor | None = None

    def count(self, num_samples: int) -> torch.Tensor:
        """Class counts (int64 ``[K]``, on the model's device) over ``num_samples`` new samples."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1; got {num_samples}")
        if self.samples_done + num_samples > self.samples_planned:
            raise ValueError(
                f"{num_samples} more samples would exceed the {self.samples_planned} planned "
                f"({self.samples_done} done)"
            )
        counts: torch.Tensor | None = None
        remaining = num_samples
        noise_pool = ThreadPoolExecutor(self._noise_threads) if self._noise_threads > 1 else None
        with torch.inference_mode(), noise_pool or nullcontext():
            if self._noisy_batch is None:
                rows = min(self.batch_size, self.samples_planned)
                self._noisy_batch = torch.empty(
                    (rows, *self._x.shape), dtype=torch.float32, device=self.device
                )
                self._ones = torch.ones(rows, dtype=torch.int64, device=self.device)
            while remaining > 0:
                if self._should_cancel is not None and self._should_cancel():
                    raise CertificationCancelled(self.samples_done)
                size = min(self.batch_size, remaining)
                labels = self._predict_noisy(size, noise_pool)
                if counts is None:
                    counts = torch.zeros(self.num_classes, dtype=torch.int64, device=self.device)
                # index_add_ never reads values back to the host (bincount would, on CUDA).
                counts.index_add_(0, labels, self._ones[:size])
                remaining -= size
                self.samples_done += size
                if self._progress is not None:
                    self._progress(self.samples_done, self.samples_planned)
        return counts

    def _predict_noisy(self, size: int, noise_pool: ThreadPoolExecutor | None) -> torch.Tensor:
        noisy = self._noisy_batch[:size]
        slices = torch.tensor_split(noisy, NOISE_STREAMS)
        if noise_pool is not None:
            list(noise_pool.map(self._fill_noise, slices, self._noise))
        else:
            for part, generator in zip(slices, self._noise, strict=True):
                self._fill_noise(part, generator)
        noisy.add_(self._x)
        logits = check_logits(self._forward(noisy, self._omega), size)
        if self.num_classes is None:
            self.num_classes = int(logits.shape[1])
        elif logits.shape[1] != self.num_classes:
            raise ValueError(
                f"the model returned {logits.shape[1]} classes after {self.num_classes} earlier"
            )
        return logits.argmax(dim=1)

    def _fill_noise(self, part: torch.Tensor, generator: torch.Generator) -> None:
        with torch.inference_mode():
            part.normal_(0.0, self.sigma, generator=generator)
