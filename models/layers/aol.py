"""AOL convolution: a convolution that is 1-Lipschitz for ANY weights.

Almost-Orthogonal Layers (Prach & Lampert, ECCV 2022, Theorem 2): for a convolution kernel
``W`` (``c_out × c_in × k × k``), let ``P = WᵀW`` be the ``c_in × c_in × (2k−1) × (2k−1)``
kernel of the operator's Gram matrix and ``d_i = (Σ_{j, shifts} |P_{ij}|)^{-1/2}``. Then the
convolution with ``W · diag(d)`` (input channels rescaled) has ``‖·‖₂ ≤ 1`` on the infinite
grid, hence also with zero padding (a restriction) and any stride (a subsampling).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from models.layers.base import ZeroPaddedConvolution, to_channels_last
from models.lipschitz_bounds import float32_cast_margin


def aol_scale(weight: torch.Tensor) -> torch.Tensor:
    """``d_i = (Σ_{j, shifts} |P_ij|)^{-1/2}`` per input channel, in ``weight``'s dtype."""
    k = weight.shape[-1]
    wt = weight.transpose(0, 1)  # [c_in, c_out, k, k]
    gram = F.conv2d(wt, wt, padding=k - 1)  # [c_in, c_in, 2k−1, 2k−1]
    row_sums = gram.abs().sum(dim=(1, 2, 3))
    # A zero input column contributes nothing; any finite scale keeps it harmless.
    return torch.where(row_sums > 0, row_sums.rsqrt(), torch.ones_like(row_sums))


@functools.cache
def _shift_groups(k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The ``k⁴ × (2k−1)²`` 0/1 matrix that sends the pair of kernel positions ``(a, b)``,
    ``(p, q)`` to their shift ``(a − p, b − q)``; made once per kernel size, dtype and device
    (a constant: a training step reads it, never writes it). Never an inference tensor, which
    autograd could not save for a later step's backward pass."""
    with torch.inference_mode(False):
        positions = torch.arange(k, device=device)
        rows = (positions.view(k, 1, 1, 1) - positions.view(1, 1, k, 1) + k - 1) * (2 * k - 1)
        columns = positions.view(1, k, 1, 1) - positions.view(1, 1, 1, k) + k - 1
        shift = (rows + columns).reshape(-1)  # [(a, b, p, q)] → index of (a − p, b − q)
        return F.one_hot(shift, (2 * k - 1) ** 2).to(dtype)


def aol_scale_by_products(weight: torch.Tensor) -> torch.Tensor:
    """:func:`aol_scale` computed another way (a training step's shortcut): the products of
    every pair of (input channel, kernel position) columns in one matrix product
    ``W_flatᵀ W_flat``, then summed per shift into ``P``. The same ``d`` up to rounding, with
    about half the multiplications of the padded convolution (which multiplies zeros) and in
    one large matrix product instead of a small convolution."""
    c_out, c_in, k, _ = weight.shape
    flat = weight.reshape(c_out, c_in * k * k)
    products = (flat.T @ flat).view(c_in, k * k, c_in, k * k).transpose(1, 2)
    gram = products.reshape(c_in * c_in, k**4) @ _shift_groups(k, weight.dtype, weight.device)
    row_sums = gram.view(c_in, -1).abs().sum(dim=1)
    return torch.where(row_sums > 0, row_sums.rsqrt(), torch.ones_like(row_sums))


class AOLConv2d(ZeroPaddedConvolution):
    """Zero-padded ``k × k`` convolution with AOL rescaling.

    Bound: ``‖conv(x) − conv(x')‖₂ ≤ ‖x − x'‖₂`` for every value of the trainable weight.
    The rescaling is computed in float64 and shrunk by :func:`float32_cast_margin` before the
    float32 cast, so the rounded kernel keeps the bound. Training steps inside
    :func:`models.layers.fast_training` rescale in the weight's own dtype instead (no margin,
    not certified: the bound is always that of :meth:`effective_weight`).
    """

    constant_bound = 1.0

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        if stride < 1:
            raise ValueError(f"stride must be ≥ 1, got {stride}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_normal_(self.weight)
        self._shrink = 1.0 - float32_cast_margin(
            kernel_size * kernel_size, out_channels, in_channels
        )

    def effective_weight(self) -> torch.Tensor:
        """The rescaled float32 kernel that the forward pass uses."""
        w = self.weight.double()
        scale = aol_scale(w)
        return (w * (scale * self._shrink).view(1, -1, 1, 1)).to(self.weight.dtype)

    def training_kernel(self) -> torch.Tensor:
        """The AOL kernel rescaled in the weight's dtype (a training step's shortcut)."""
        return self.weight * aol_scale_by_products(self.weight).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.takes_training_shortcuts():
            kernel, x = self.training_kernel(), to_channels_last(x)
        else:
            kernel = self.cached_when_frozen(self.effective_weight)
        out = F.conv2d(x, kernel, self.bias, stride=self.stride, padding=self.kernel_size // 2)
        # A one-channel input has no layout of its own: keep the training step channels-last.
        return to_channels_last(out) if self.takes_training_shortcuts() else out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, bias={self.bias is not None}"
        )
