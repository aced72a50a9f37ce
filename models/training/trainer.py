"""The training loop: Gaussian noise augmentation with Ω drawn per sample, plus a margin term.

Each step draws, for every sample, input noise ``ε ~ N(0, σ² I)`` and a fresh Ω — the same
randomness the smoothing certificate averages over — and minimizes

    (1 − λ) · CE(t · s(x + ε; Ω), y)  +  λ · CE(t · (s(x; Ω′) − √2·L·r·e_y), y)

where the second (margin) term, on the clean input, pushes the logit margin past the one that
certifies radius ``r`` (:mod:`models.training.losses`); ``L`` is the model's certified bound,
re-read every epoch. ``λ = 0`` is Cohen et al.'s noise training. Adam with a one-cycle
learning-rate schedule. Deterministic given the seed on one device and torch version: the seed
fixes the initial weights (set by the caller), the data order, the noise and Ω. Optional floors
on the residual mixes β and the gate weights (:func:`keep_floors`) keep the random parts in
play: without them training tends to switch the hybrid blocks off (β → 0.01).

The steps run inside :func:`models.layers.fast_training`: derived weights (AOL rescaling, the
head's normalisation, gate weights) in the parameters' dtype and the gate's convolutions
merged, the same function in exact arithmetic without the float64 work that certification
needs. The bound is never taken from them: ``lipschitz_bound()`` reads the certified derived
weights, and the package records it from the final float32 parameters (and recomputes it on
loading).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from models.data import ImageDataset
from models.layers import ConvexGate, ConvexResidual, fast_training
from models.protocol import CertifiableModel
from models.training.losses import margin_cross_entropy, margin_offset

MARGIN_INPUTS = ("clean", "noisy", "split")
"""The inputs the margin term can be taken on (:attr:`TrainingSettings.margin_inputs`)."""
PRECISIONS = ("float32", "bfloat16")
"""The arithmetic of the training steps' forward passes (:attr:`TrainingSettings.precision`)."""


@dataclass(frozen=True)
class TrainingSettings:
    """Everything the loop needs besides the model and the data."""

    sigma: float = 0.25
    """Standard deviation of the Gaussian input noise (the model's smoothing sigma)."""
    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 3e-3
    """Peak learning rate of the one-cycle schedule."""
    logit_scale: float = 10.0
    """``t``: logits are multiplied by it before the softmax."""
    margin_weight: float = 0.0
    """``λ`` in [0, 1]: weight of the margin term (needs a model with a Lipschitz bound)."""
    margin_radius: float = 0.5
    """``r``: the radius the margin term aims to certify."""
    seed: int = 0
    beta_floor: float = 0.0
    """Least residual mix ``β`` of every hybrid block, kept after each step (0: none)."""
    gate_floor: float = 0.0
    """Least weight of every branch of every gate, kept after each step (0: none)."""
    margin_inputs: str = "clean"
    """What the margin term is taken on: ``"clean"`` (the inputs themselves, a second batch
    through the network each step), ``"noisy"`` (the noisy inputs of the cross-entropy term,
    the same forward pass: half the step's work) or ``"split"`` (the clean inputs of
    ``margin_samples`` images of each batch, the noise term on the noisy inputs of the others:
    one forward pass of the batch). Always a training objective only; margin certificates are
    computed at the clean input with the certified bound."""
    margin_samples: int | None = None
    """With ``margin_inputs="clean"``: the margin term on the clean inputs of this many images
    of each batch (the first ones of a shuffled batch: a random subset; an unbiased estimate
    of the same term), so the second batch through the network is that much smaller; ``None``:
    all of them. With ``"split"`` (where it is required): the images of each batch that take
    the margin term instead of the noise term (at most half of a short last batch)."""
    precision: str = "float32"
    """The training steps' forward passes: ``"float32"``, or ``"bfloat16"`` (mixed precision:
    ``torch.autocast``, for GPUs with bfloat16 units; on a CPU without them it is slower). The
    weights, the optimizer, the loss and everything certified stay float32: the bound is
    computed from the stored float32 weights and certification runs in IEEE float32."""

    def __post_init__(self) -> None:
        if not 0 <= self.sigma < math.inf:
            raise ValueError(f"sigma must be finite and ≥ 0, got {self.sigma}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"epochs and batch_size must be ≥ 1, got {self.epochs}, {self.batch_size}"
            )
        if not (0 < self.learning_rate < math.inf and 0 < self.logit_scale < math.inf):
            raise ValueError("learning_rate and logit_scale must be finite and positive")
        if not 0.0 <= self.margin_weight <= 1.0:
            raise ValueError(f"margin_weight must lie in [0, 1], got {self.margin_weight}")
        if not 0 <= self.margin_radius < math.inf:
            raise ValueError(f"margin_radius must be finite and ≥ 0, got {self.margin_radius}")
        if self.margin_inputs not in MARGIN_INPUTS:
            raise ValueError(
                f"margin_inputs must be one of {', '.join(MARGIN_INPUTS)}, "
                f"got {self.margin_inputs!r}"
            )
        if self.margin_samples is not None and self.margin_samples < 1:
            raise ValueError(f"margin_samples must be ≥ 1, got {self.margin_samples}")
        if self.margin_samples is not None and self.margin_inputs == "noisy":
            raise ValueError("margin_samples takes the margin term on clean inputs only")
        if self.margin_inputs == "split" and self.margin_samples is None:
            raise ValueError('margin_inputs="split" needs margin_samples (images per batch)')
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if not 0.0 <= self.beta_floor <= 1.0 or not 0.0 <= self.gate_floor <= 1.0:
            raise ValueError(
                f"beta_floor and gate_floor must lie in [0, 1], got {self.beta_floor}, "
                f"{self.gate_floor}"
            )

    def floors(self) -> bool:
        """Whether the training keeps floors on the residual mixes or the gate weights."""
        return self.beta_floor > 0 or self.gate_floor > 0

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)

    def loss_formula(self) -> str:
        lam, t, r, s = self.margin_weight, self.logit_scale, self.margin_radius, self.sigma
        noise = f"CE({t:g}·s(x + ε; Ω), y), ε ~ N(0, {s:g}² I)"
        floors = ""
        if self.floors():
            floors = (
                f"; after each step β ≥ {self.beta_floor:g}, gate weights ≥ {self.gate_floor:g}"
            )
        if lam == 0:
            return f"{noise}; Ω fresh per sample{floors}"
        if self.margin_inputs == "noisy":
            return (
                f"{1 - lam:g}·{noise} + {lam:g}·CE({t:g}·(s(x + ε; Ω) − √2·L·{r:g}·e_y), y); "
                f"Ω fresh per sample, the same noisy logits in both terms; "
                f"L the certified bound{floors}"
            )
        subset = ""
        if self.margin_inputs == "split":
            subset = (
                f"; the margin term on {self.margin_samples} images of each batch, the noise "
                "term on the others, one forward pass"
            )
        elif self.margin_samples is not None:
            subset = f"; the margin term on {self.margin_samples} images of each batch"
        return (
            f"{1 - lam:g}·{noise} + {lam:g}·CE({t:g}·(s(x; Ω′) − √2·L·{r:g}·e_y), y); "
            f"Ω, Ω′ fresh per sample; L the certified bound{subset}{floors}"
        )


@dataclass(frozen=True)
class TrainingRun:
    """What the loop did."""

    epoch_losses: tuple[float, ...]
    """Mean training loss of each epoch."""
    final_noisy_accuracy: float
    """Accuracy on the noisy training inputs during the last epoch."""
    steps: int
    wall_seconds: float
    device: str


def training_step(
    model: CertifiableModel,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainingSettings,
    *,
    offset: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One update on the batch ``(x, y)``: noise ``ε`` and Ω from ``generator``, the objective
    of the module docstring with the margin ``offset`` (``√2·L·r``), one optimizer step.
    Returns the loss, the noisy logits and their labels, all detached.

    With ``margin_inputs="clean"`` the noisy and the clean inputs of the margin term go
    through the network as one batch (each sample with its own Ω), so the derived weights are
    computed once per step; with ``"noisy"`` the margin term reuses the noisy logits; with
    ``"split"`` the first ``margin_samples`` images go in clean (the margin term) and the
    others noisy (the noise term), one batch of the batch's size.
    """
    margin_weight = settings.margin_weight
    split = 0
    if margin_weight > 0 and settings.margin_inputs == "split":
        split = min(settings.margin_samples, len(x) // 2)
        margin_weight = margin_weight if split > 0 else 0.0
    noise = torch.randn(x[split:].shape, generator=generator, device=x.device)
    noisy, noisy_labels = x[split:] + settings.sigma * noise, y[split:]
    margin_logits = None
    margin_labels = y
    with _forward_precision(settings.precision, x.device):
        if margin_weight > 0 and settings.margin_inputs != "noisy":
            clean = x[:split] if split else x[: settings.margin_samples]
            margin_labels = y[: len(clean)]
            logits = model(torch.cat((noisy, clean)), generator=generator).float()
            noisy_logits, margin_logits = logits.split([len(noisy), len(clean)])
        else:
            noisy_logits = model(noisy, generator=generator).float()
    loss = margin_cross_entropy(
        noisy_logits, noisy_labels, offset=0.0, logit_scale=settings.logit_scale
    )
    if margin_weight > 0:
        margin_loss = margin_cross_entropy(
            noisy_logits if margin_logits is None else margin_logits,
            margin_labels,
            offset=offset,
            logit_scale=settings.logit_scale,
        )
        loss = (1 - margin_weight) * loss + margin_weight * margin_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if settings.floors():
        keep_floors(model, settings)
    return loss.detach(), noisy_logits.detach(), noisy_labels


def _forward_precision(precision: str, device: torch.device):
    """The autocast context of a training step's forward pass (none for float32)."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, precision))


def keep_floors(model: CertifiableModel, settings: TrainingSettings) -> None:
    """Raise every residual mix ``β`` to ``settings.beta_floor`` and every gate weight to
    ``settings.gate_floor`` where the last step took them below (a projection after the step).

    The floors keep the random-projection and frequency branches and the attention-noise
    bodies in play; the certified bound holds for any weights in range, floored or not.
    """
    for module in model.modules():
        if isinstance(module, ConvexGate) and settings.gate_floor > 0:
            module.keep_weights_above(settings.gate_floor)
        elif isinstance(module, ConvexResidual) and settings.beta_floor > 0:
            module.keep_beta_above(settings.beta_floor)


def check_floors(model: CertifiableModel, settings: TrainingSettings) -> None:
    """Raise ``ValueError`` when ``model`` has nothing the floors apply to, or a gate with so
    many branches that their floors exceed 1."""
    gates = [m for m in model.modules() if isinstance(m, ConvexGate)]
    residuals = [m for m in model.modules() if isinstance(m, ConvexResidual)]
    if settings.beta_floor > 0 and not residuals:
        raise ValueError(f"beta_floor needs residual mixes; {type(model).__name__} has none")
    if settings.gate_floor > 0 and not gates:
        raise ValueError(f"gate_floor needs convex gates; {type(model).__name__} has none")
    widest = max((len(g.branches) for g in gates), default=0)
    if settings.gate_floor * widest > 1:
        raise ValueError(
            f"gate_floor {settings.gate_floor} × {widest} branches exceeds 1; "
            f"at most {1 / widest:.4g}"
        )


def train_classifier(
    model: CertifiableModel,
    dataset: ImageDataset,
    settings: TrainingSettings,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> TrainingRun:
    """Train ``model`` in place on ``dataset`` (see the module docstring for the objective)."""
    device = torch.device(device)
    if settings.margin_weight > 0 and model.lipschitz_bound() is None:
        raise ValueError(
            f"the margin term needs a model with a certified Lipschitz bound; "
            f"{type(model).__name__} has none (use margin_weight=0)"
        )
    check_floors(model, settings)
    model.to(device).train()
    images, labels = dataset.images.to(device), dataset.labels.to(device)
    order_generator = torch.Generator().manual_seed(settings.seed)
    noise_generator = torch.Generator(device=device).manual_seed(settings.seed + 1)
    steps_per_epoch = math.ceil(len(dataset) / settings.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.learning_rate, total_steps=settings.epochs * steps_per_epoch
    )

    started = time.perf_counter()
    epoch_losses: list[float] = []
    correct = 0
    bar = tqdm(range(settings.epochs), desc="train", unit="epoch", disable=not progress)
    # Steps take the layers' shortcuts; the bound L is always the certified one.
    with fast_training(model):
        for _ in bar:
            # L is re-read each epoch: it moves (≤ 2) as the weights change.
            offset = 0.0
            if settings.margin_weight > 0:
                offset = margin_offset(settings.margin_radius, float(model.lipschitz_bound()))
            total, correct, seen = 0.0, 0, 0
            for batch in torch.randperm(len(dataset), generator=order_generator).split(
                settings.batch_size
            ):
                batch = batch.to(device)
                x, y = images[batch], labels[batch]
                loss, noisy_logits, noisy_labels = training_step(
                    model, optimizer, x, y, settings, offset=offset, generator=noise_generator
                )
                schedule.step()
                total += float(loss) * len(batch)
                correct += int((noisy_logits.argmax(dim=1) == noisy_labels).sum())
                seen += len(noisy_labels)
            epoch_losses.append(total / len(dataset))
            if not math.isfinite(epoch_losses[-1]):
                raise ValueError(
                    f"training diverged: the loss of epoch {len(epoch_losses)} is "
                    f"{epoch_losses[-1]}; lower --learning-rate (now {settings.learning_rate:g}) "
                    "or --logit-scale"
                )
            accuracy = correct / seen
            bar.set_postfix(loss=f"{epoch_losses[-1]:.4f}", noisy_acc=f"{accuracy:.3f}")
    model.eval()
    return TrainingRun(
        epoch_losses=tuple(epoch_losses),
        final_noisy_accuracy=correct / seen,
        steps=settings.epochs * steps_per_epoch,
        wall_seconds=time.perf_counter() - started,
        device=str(device),
    )
