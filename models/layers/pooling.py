"""Norm-preserving resampling: invertible downsampling and scaled average pooling."""

from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F

from models.layers.base import (
    LipschitzModule,
    TensorMap,
    ZeroPaddedConvolution,
    to_channels_last,
)


class InvertibleDownsample(LipschitzModule):
    """Space-to-depth (pixel unshuffle) by ``factor``: a permutation of the coordinates.

    Bound: 1 (it is orthogonal, ``‖y‖₂ = ‖x‖₂``). Training steps inside
    :func:`models.layers.fast_training` run it and a following 1×1 convolution as one
    convolution with stride ``factor`` (no copy of the rearranged map, forward or backward).
    """

    constant_bound = 1.0

    def __init__(self, factor: int) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"downsampling factor must be ≥ 1, got {factor}")
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(x, self.factor) if self.factor > 1 else x

    def fused_with(self, following: torch.nn.Module) -> TensorMap | None:
        """``following ∘ self`` as one ``factor × factor`` convolution with stride ``factor``
        when ``following`` is a 1×1 convolution: pixel unshuffle puts ``x[c, r·h + i, r·w + j]``
        in channel ``c·r² + i·r + j``, so the 1×1 kernel ``K[o, c·r² + i·r + j]`` read as
        ``K'[o, c, i, j]`` applies the same sums to the same pixels."""
        if not (
            self.factor > 1
            and isinstance(following, ZeroPaddedConvolution)
            and following.kernel_size == 1
            and following.stride == 1
        ):
            return None
        r = self.factor

        def downsample_and_convolve(x: torch.Tensor) -> torch.Tensor:
            if x.shape[-2] % r or x.shape[-1] % r:
                raise ValueError(f"cannot downsample {tuple(x.shape[-2:])} by {r}")
            kernel = following.training_kernel()
            kernel = kernel.reshape(kernel.shape[0], -1, r, r)
            out = F.conv2d(to_channels_last(x), kernel, following.bias, stride=r)
            following.check_input_size(out)  # a 1×1 convolution's input has its output's size
            return out

        return downsample_and_convolve

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class ScaledAvgPool2d(LipschitzModule):
    """Average pooling over non-overlapping ``k_h × k_w`` windows, times ``c ≈ √(k_h k_w)``.

    Plain averaging has norm ``1/√(k_h k_w)`` and would shrink every margin; the scale
    restores it. ``c`` is the float32 value rounded so that ``c² ≤ k_h k_w`` exactly.
    Bound: ``c / √(k_h k_w) ≤ 1`` (windows are disjoint, each window is a scaled sum).
    """

    constant_bound = 1.0

    def __init__(self, window: tuple[int, int]) -> None:
        super().__init__()
        kh, kw = int(window[0]), int(window[1])
        if kh < 1 or kw < 1:
            raise ValueError(f"pooling window must be positive, got {window}")
        self.window = (kh, kw)
        scale = torch.tensor(math.sqrt(kh * kw), dtype=torch.float32)
        while Fraction(float(scale)) ** 2 > kh * kw:
            scale = torch.nextafter(scale, torch.zeros_like(scale))
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window == (1, 1):
            return x
        return F.avg_pool2d(x, self.window) * self.scale

    def extra_repr(self) -> str:
        return f"window={self.window}"
