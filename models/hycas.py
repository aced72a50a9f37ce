"""HyCAS: Hybrid Convolutions with Attention Stochasticity, assembled so its bound is proved.

This module only assembles layers from :mod:`models.layers`. The network, for input
``x ∈ [0, 1]^{C×H×W}`` and a draw Ω of its internal randomness, is

    standardize → [space-to-depth] → AOL conv → MaxMin
    → stages: [space-to-depth → AOL 1×1 → MaxMin] → hybrid blocks
    → attention skip  x + A_Ω(T x)  (the single additive skip: factor 2)
    → scaled pooling → flatten → row-normalised linear head

and a hybrid block is the convex residual ``(1 − β) a + β · Att_Ω(MaxMin(gate(a)))`` with
``gate(a) = w₁ AOL(a) + w₂ RandomProjection(a) + w₃ Frequency(a) + b`` (scalar convex
weights). Every layer is 1-Lipschitz for every Ω except the skip (≤ 2), so
``lipschitz_bound() ≤ 2`` for any trained weights.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from models.card import Normalization
from models.layers import (
    AdditiveSkip,
    AOLConv2d,
    ConvexGate,
    ConvexResidual,
    Flatten,
    FrequencyFilter,
    InvertibleDownsample,
    LipschitzModule,
    LipschitzSequential,
    MaxMin,
    NormalizedLinear,
    OmegaSource,
    RandomProjectionConv2d,
    ScaledAvgPool2d,
    Standardize,
    StochasticAttention,
)
from models.protocol import CertifiableModel, OmegaGenerator, OmegaSeed, describe_network


@dataclasses.dataclass(frozen=True)
class HyCASConfig:
    """Everything that determines a HyCAS architecture besides the input shape and classes."""

    width: int = 32
    """Channels after the stem; each later stage doubles them."""
    stage_depths: tuple[int, ...] = (1, 1)
    """Hybrid blocks per stage; stages after the first halve the resolution."""
    stem_downsample: int = 1
    """Space-to-depth factor applied to the input before the stem convolution."""
    kernel_size: int = 3
    pooled_size: int = 4
    """Spatial size after the final scaled pooling (the head sees width·2^(S−1)·p² features)."""
    attention_temperature: float = 1.0
    """Scale τ of the Ω-noise on the attention logits."""
    attention_noise_std: float = 0.05
    """Standard deviation s of the additive Ω-noise after each attention mask."""
    random_projection: bool = True
    """Include the frozen random-projection branch in every hybrid block."""
    projection_seed: int = 0
    """Seed of the frozen random-projection filters (block i uses projection_seed + i)."""
    mean: tuple[float, ...] | None = None
    """Per-channel mean subtracted inside the model (default 0.5 per channel)."""
    std: tuple[float, ...] | None = None
    """Per-channel std; only its ratios matter (see models.layers.normalize)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_config(input_shape: tuple[int, int, int]) -> HyCASConfig:
    """Sensible defaults by input size: downsample large inputs early, halve up to 3 times
    (4 after a stem downsampling) while the map stays ≥ 4, pool to ≤ 7×7 for the head."""
    _, h, w = input_shape
    side = min(h, w)
    largest_stem = 4 if side >= 128 else 2 if side >= 64 else 1
    stem = max(s for s in (1, 2, 4) if s <= largest_stem and h % s == 0 and w % s == 0)
    h, w = h // stem, w // stem
    stages, max_stages = 1, 4 if stem > 1 else 3
    while stages < max_stages and h % 2 == 0 and w % 2 == 0 and min(h, w) // 2 >= 4:
        h, w, stages = h // 2, w // 2, stages + 1
    pooled = max(d for d in range(1, 8) if h % d == 0 and w % d == 0)
    return HyCASConfig(
        stage_depths=(1,) * stages,
        stem_downsample=stem,
        pooled_size=pooled,
    )


_INT_FIELDS = ("width", "stem_downsample", "kernel_size", "pooled_size", "projection_seed")
_REAL_FIELDS = ("attention_temperature", "attention_noise_std")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_types(cfg: HyCASConfig) -> None:
    """Wrong types are a ``ValueError`` that names the option, not a ``TypeError`` later."""
    for name in _INT_FIELDS:
        if not _is_int(getattr(cfg, name)):
            raise ValueError(f"{name} must be an int, got {getattr(cfg, name)!r}")
    for name in _REAL_FIELDS:
        if not _is_real(getattr(cfg, name)):
            raise ValueError(f"{name} must be a number, got {getattr(cfg, name)!r}")
    if not isinstance(cfg.random_projection, bool):
        raise ValueError(f"random_projection must be True or False, got {cfg.random_projection!r}")
    if not isinstance(cfg.stage_depths, tuple) or not all(map(_is_int, cfg.stage_depths)):
        raise ValueError(
            f"stage_depths must be a non-empty list of positive ints, got {cfg.stage_depths!r}"
        )
    for name in ("mean", "std"):
        values = getattr(cfg, name)
        if values is not None and (not isinstance(values, tuple) or not all(map(_is_real, values))):
            raise ValueError(f"{name} must be a list of numbers, one per channel, got {values!r}")


def _check_config(input_shape: tuple[int, int, int], num_classes: int, cfg: HyCASConfig) -> None:
    c, h, w = input_shape
    _check_types(cfg)
    if cfg.width < 2 or cfg.width % 2:
        raise ValueError(
            f"width must be an even number ≥ 2 (MaxMin pairs channels), got {cfg.width}"
        )
    if not cfg.stage_depths or any(d < 1 for d in cfg.stage_depths):
        raise ValueError(
            f"stage_depths must be a non-empty list of positive ints, got {cfg.stage_depths}"
        )
    if cfg.stem_downsample < 1:
        raise ValueError(f"stem_downsample must be ≥ 1, got {cfg.stem_downsample}")
    if cfg.kernel_size < 1 or cfg.kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {cfg.kernel_size}")
    factor = cfg.stem_downsample * 2 ** (len(cfg.stage_depths) - 1)
    if h % factor or w % factor:
        raise ValueError(
            f"input {h}×{w} cannot be downsampled by {factor} (stem_downsample="
            f"{cfg.stem_downsample}, {len(cfg.stage_depths)} stages): H and W must be multiples "
            f"of {factor}"
        )
    fh, fw = h // factor, w // factor
    if cfg.pooled_size < 1 or fh % cfg.pooled_size or fw % cfg.pooled_size:
        raise ValueError(
            f"pooled_size {cfg.pooled_size} must divide the final feature map {fh}×{fw}"
        )
    for name, values in (("mean", cfg.mean), ("std", cfg.std)):
        if values is not None and len(values) != c:
            raise ValueError(f"{name} has {len(values)} entries; the input has {c} channels")


def _hybrid_block(
    channels: int, size: tuple[int, int], cfg: HyCASConfig, seed: int
) -> LipschitzModule:
    branches: list[LipschitzModule] = [AOLConv2d(channels, channels, cfg.kernel_size, bias=False)]
    if cfg.random_projection:
        branches.append(
            RandomProjectionConv2d(channels, channels, cfg.kernel_size, size, seed=seed)
        )
    branches.append(FrequencyFilter(channels, size))
    gate = ConvexGate(branches, out_channels=channels)
    body = LipschitzSequential(
        {
            "gate": gate,
            "activation": MaxMin(),
            "attention": StochasticAttention(
                channels,
                size,
                temperature=cfg.attention_temperature,
                noise_std=cfg.attention_noise_std,
            ),
        }
    )
    return ConvexResidual(body)


class HyCAS(LipschitzModule, CertifiableModel):
    """A HyCAS classifier ``x ↦ s(x; Ω)``: logits for inputs in ``[0, 1]^{C×H×W}``.

    It implements :class:`models.protocol.CertifiableModel`:

    - ``model(x)`` draws a fresh Ω for every sample (the stochastic base classifier);
    - ``model(x, generator=g)`` draws them from ``g`` (reproducible smoothing), or from one
      generator per segment of the batch (``generator=[(g1, n1), (g2, n2)]``);
    - ``model(x, omega_seed=s)`` or ``with model.frozen(s):`` uses one Ω from seed ``s`` for
      the whole batch (a deterministic classifier, for the margin certificate).

    ``lipschitz_bound()`` is a certified L2 bound of input → logits for every Ω (≤ 2).
    """

    stochastic = True
    """Ω is drawn in every forward pass (also for the Lipschitz baseline, whose config makes
    every draw have no effect)."""

    def __init__(
        self, input_shape: tuple[int, int, int], num_classes: int, config: HyCASConfig
    ) -> None:
        super().__init__()
        _check_config(input_shape, num_classes, config)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self.config = config
        self._frozen_seed: int | None = None
        self.body = LipschitzSequential(self._assemble())

    def _assemble(self) -> dict[str, LipschitzModule]:
        cfg = self.config
        c, h, w = self.input_shape
        mean = cfg.mean if cfg.mean is not None else (0.5,) * c
        std = cfg.std if cfg.std is not None else (1.0,) * c
        s = cfg.stem_downsample
        h, w = h // s, w // s
        layers: dict[str, LipschitzModule] = {
            "standardize": Standardize(mean, std),
            "stem_downsample": InvertibleDownsample(s),
            "stem_conv": AOLConv2d(c * s * s, cfg.width, cfg.kernel_size),
            "stem_activation": MaxMin(),
        }
        channels, block = cfg.width, 0
        for stage, depth in enumerate(cfg.stage_depths, start=1):
            if stage > 1:
                layers[f"stage{stage}_downsample"] = LipschitzSequential(
                    InvertibleDownsample(2),
                    AOLConv2d(4 * channels, 2 * channels, kernel_size=1),
                    MaxMin(),
                )
                channels, h, w = 2 * channels, h // 2, w // 2
            for i in range(1, depth + 1):
                layers[f"stage{stage}_block{i}"] = _hybrid_block(
                    channels, (h, w), cfg, seed=cfg.projection_seed + block
                )
                block += 1
        layers["attention_skip"] = AdditiveSkip(
            LipschitzSequential(
                AOLConv2d(channels, channels, kernel_size=1),
                StochasticAttention(
                    channels,
                    (h, w),
                    temperature=cfg.attention_temperature,
                    noise_std=cfg.attention_noise_std,
                ),
            )
        )
        p = cfg.pooled_size
        layers["pool"] = ScaledAvgPool2d((h // p, w // p))
        layers["flatten"] = Flatten()
        layers["head"] = NormalizedLinear(channels * p * p, self.num_classes)
        return layers

    def validate_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is a float32 batch ``[B, *input_shape]``."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.dtype != torch.float32:
            raise ValueError(f"expected dtype torch.float32, got {x.dtype}")
        if x.ndim != 4:
            raise ValueError(
                f"expected a batch [B, C, H, W] = [B, {', '.join(map(str, self.input_shape))}], "
                f"got a tensor of rank {x.ndim} with shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.input_shape[0]:
            raise ValueError(f"expected {self.input_shape[0]} channel(s), got {x.shape[1]}")
        if tuple(x.shape[2:]) != self.input_shape[1:]:
            raise ValueError(
                f"expected spatial size {self.input_shape[1]}×{self.input_shape[2]}, got "
                f"{x.shape[2]}×{x.shape[3]}"
            )

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        *,
        generator: OmegaGenerator | None = None,
        omega_seed: OmegaSeed | None = None,
    ) -> torch.Tensor:
        self.validate_input(x)
        if omega_seed is None and generator is None:
            omega_seed = self._frozen_seed
        omega = OmegaSource(x.shape[0], x.device, generator=generator, seed=omega_seed)
        return self.body(x, omega)

    @contextmanager
    def frozen(self, seed: int) -> Iterator[HyCAS]:
        """Within the block, calls without ``generator``/``omega_seed`` use the Ω of ``seed``.

        This sets state on the module: threads sharing one model should pass ``omega_seed``
        to ``forward`` instead.
        """
        previous, self._frozen_seed = self._frozen_seed, int(seed)
        try:
            yield self
        finally:
            self._frozen_seed = previous

    def lipschitz_bound(self) -> float:
        return self.body.lipschitz_bound()

    def normalization(self) -> Normalization:
        standardize = self.body.layers["standardize"]
        return Normalization(
            mean=tuple(float(v) for v in standardize.mean.flatten()),
            scale=tuple(float(v) for v in standardize.scale.flatten()),
        )

    def layer_bounds(self) -> dict[str, float]:
        return self.body.layer_bounds()

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: shapes, config, parameter count and the certified bounds."""
        return describe_network(
            self, "hycas", self.config.to_dict(), layer_bounds=self.layer_bounds()
        )


def build_hycas(
    input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, **config: Any
) -> HyCAS:
    """Build a HyCAS network for ``input_shape = (C, H, W)`` and ``num_classes`` classes.

    Keyword arguments override fields of the size-dependent :func:`default_config`; unknown
    names and shapes it cannot build raise ``ValueError``.
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or any(not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"input_shape must be three positive ints (C, H, W), got {input_shape}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int ≥ 2, got {num_classes}")
    fields = {f.name for f in dataclasses.fields(HyCASConfig)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ValueError(f"unknown HyCAS config option(s) {unknown}; valid: {sorted(fields)}")
    for key in ("stage_depths", "mean", "std"):
        if isinstance(config.get(key), list | tuple):
            config[key] = tuple(config[key])
    cfg = dataclasses.replace(default_config(shape), **config)  # type: ignore[arg-type]
    return HyCAS(shape, num_classes, cfg)
