"""The contract every HyCAS layer meets: a certified L2 Lipschitz bound, and an optional Ω.

A layer computes ``y = f(x; Ω)``. ``lipschitz_bound()`` returns an upper bound on
``sup_{x≠x'} ‖f(x; Ω) − f(x'; Ω)‖₂ / ‖x − x'‖₂`` that holds for EVERY draw of Ω and for the
float32 parameter values the layer holds now, in exact arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from models.layers.omega import OmegaSource
from models.lipschitz_bounds import product_upper_bound

TensorMap = Callable[[torch.Tensor], torch.Tensor]


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` laid out as ``[B, H, W, C]`` in memory (same values, same shape): the layout in
    which the CPU convolution kernels run fastest, used by the training shortcuts (a copy only
    when ``x`` is not already in it)."""
    return x.contiguous(memory_format=torch.channels_last)


class LipschitzModule(nn.Module):
    """Base class of the Lipschitz layers; subclasses implement ``lipschitz_bound``."""

    draws_omega: bool = False
    """True when ``forward`` takes the randomness source as its second argument."""

    fast_training: bool = False
    """Set on every layer of a model inside :func:`fast_training` (never by hand)."""

    constant_bound: float | None = None
    """The bound of a layer whose construction gives it whatever its parameters and Ω (an
    AOL convolution, MaxMin, a permutation); layers whose bound depends on the weights they
    hold leave it ``None`` and override :meth:`lipschitz_bound`."""

    def lipschitz_bound(self) -> float:
        if self.constant_bound is None:
            raise NotImplementedError(f"{type(self).__name__} does not state a Lipschitz bound")
        return self.constant_bound

    def weighted_training_output(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``weight · self(x)`` for a gate's training step (scalar ``weight``); a layer that is
        linear may fold the weight into its own kernel instead of scaling its output."""
        return weight * self(x)

    def fused_with(self, following: nn.Module) -> TensorMap | None:
        """This layer and ``following`` as one map for a training step's shortcut, or ``None``
        when they do not fuse. The fused map must be the composition ``following ∘ self`` in
        exact arithmetic; :class:`LipschitzSequential` uses it only in a forward pass that
        takes the training shortcuts."""
        return None

    def takes_training_shortcuts(self) -> bool:
        """True in a forward pass that records gradients inside :func:`fast_training`: the
        layer may then compute the same real-number function rounded another way (derived
        weights in the parameters' dtype, branches merged), which no bound covers."""
        return self.fast_training and torch.is_grad_enabled()

    def cached_when_frozen(self, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``compute()`` (a weight derived from this layer's parameters), cached while no
        gradient is recorded and the parameters are unchanged: certification runs many
        forward passes with the same weights, training recomputes every time.

        On the CPU "unchanged" means the same values, so an in-place edit through ``.data``
        is seen. On an accelerator, comparing values would synchronise with the host at every
        layer of every batch; there the key is the storage and its version counter, which an
        in-place edit under ``torch.no_grad()`` or ``load_state_dict`` advances and an edit
        through ``.data`` does not (such an edit is not seen). Either way the layer's bound is
        unaffected: AOL and row-normalised weights are contractions whatever parameters they
        were derived from.
        """
        if torch.is_grad_enabled():
            return compute()
        params = tuple(p.detach() for p in self.parameters(recurse=False))
        cache = self.__dict__.get("_derived_weight_cache")
        if cache is None or not _cache_matches(cache[0], params):
            cache = (_cache_key(params), compute())
            self.__dict__["_derived_weight_cache"] = cache
        return cache[1]


@contextmanager
def fast_training(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, the forward passes of ``model`` that record gradients take its
    layers' training shortcuts (see :meth:`LipschitzModule.takes_training_shortcuts`).

    The certified network is untouched: ``lipschitz_bound()`` never reads a shortcut, and a
    forward pass under ``torch.no_grad()`` or ``torch.inference_mode()`` (every certificate
    runs in one) is the certified one, inside the block and out. A shortcut rounds as a
    training step may: in exact arithmetic it is the layer's function with its current
    parameters, but the float64 margins that make the float32 forward pass keep the bound
    are left out, so a shortcut must never be used to certify anything.
    """
    layers = [m for m in model.modules() if isinstance(m, LipschitzModule)]
    for layer in layers:
        layer.fast_training = True
    try:
        yield model
    finally:
        for layer in layers:
            layer.__dict__.pop("fast_training", None)


class ZeroPaddedConvolution(LipschitzModule):
    """A convolution ``x ↦ K ∗ x (+ b)`` with zero padding ``kernel_size // 2``.

    A gate merges such branches of equal geometry into one convolution in training steps
    (convolution is linear in the kernel: ``Σ w_i (K_i ∗ x) = (Σ w_i K_i) ∗ x``).
    """

    kernel_size: int
    stride: int = 1
    bias: torch.Tensor | None

    def training_kernel(self) -> torch.Tensor:
        """The kernel of a training step (the shortcut of :func:`fast_training`)."""
        raise NotImplementedError

    def check_input_size(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` for an input size the layer's bound does not cover (none here)."""


def _cache_key(params: tuple[torch.Tensor, ...]) -> tuple:
    if all(p.device.type == "cpu" for p in params):
        return ("values", tuple(p.clone() for p in params))
    return ("storage", tuple((p.data_ptr(), p._version, p.shape, p.dtype) for p in params))


def _cache_matches(key: tuple, params: tuple[torch.Tensor, ...]) -> bool:
    kind, recorded = key
    if kind == "values":
        return same_values(recorded, params)
    current = _cache_key(params)
    return current[0] == "storage" and current[1] == recorded


def same_values(snapshot: tuple[torch.Tensor, ...], tensors: tuple[torch.Tensor, ...]) -> bool:
    """True when ``tensors`` hold exactly the values (dtype, device and shape too) of
    ``snapshot``, a copy taken earlier.

    Caches of derived weights and bounds are keyed by value, not by storage pointer and
    version counter: an in-place edit through ``.data`` bumps no version counter, and a
    freed storage can be reused by another tensor.
    """
    return len(snapshot) == len(tensors) and all(
        s.dtype == t.dtype and s.device == t.device and s.shape == t.shape and torch.equal(s, t)
        for s, t in zip(snapshot, tensors, strict=True)
    )


def apply_layer(layer: nn.Module, x: torch.Tensor, omega: OmegaSource | None) -> torch.Tensor:
    """Run ``layer`` on ``x``, handing it the randomness source when it draws from Ω."""
    if getattr(layer, "draws_omega", False):
        if omega is None:
            raise ValueError(f"{type(layer).__name__} draws from Ω but no source was given")
        return layer(x, omega)
    return layer(x)


class LipschitzSequential(LipschitzModule):
    """A composition ``f_n ∘ … ∘ f_1``; bound: the product of the layers' bounds, rounded up.

    Layers are given positionally (named "0", "1", …) or as one mapping of names to layers.
    """

    def __init__(self, *layers: LipschitzModule | Mapping[str, LipschitzModule]) -> None:
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], Mapping):
            named = dict(layers[0])
        else:
            named = {str(i): layer for i, layer in enumerate(layers)}
        self.layers = nn.ModuleDict(named)
        self.draws_omega = any(getattr(layer, "draws_omega", False) for layer in named.values())

    def forward(self, x: torch.Tensor, omega: OmegaSource | None = None) -> torch.Tensor:
        layers = list(self.layers.values())
        shortcuts = self.takes_training_shortcuts()
        i = 0
        while i < len(layers):
            fused = None
            if shortcuts and i + 1 < len(layers) and isinstance(layers[i], LipschitzModule):
                fused = layers[i].fused_with(layers[i + 1])
            if fused is not None:
                x, i = fused(x), i + 2
            else:
                x, i = apply_layer(layers[i], x, omega), i + 1
        return x

    def lipschitz_bound(self) -> float:
        return product_upper_bound(layer.lipschitz_bound() for layer in self.layers.values())

    def layer_bounds(self) -> dict[str, float]:
        """The certified bound of each layer, by name."""
        return {name: layer.lipschitz_bound() for name, layer in self.layers.items()}
