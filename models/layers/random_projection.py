"""Frozen random-projection filters, normalised by a certified bound of their operator norm.

The paper's random-projection branch convolves with random Gaussian filters that are never
trained. Here they are drawn once from a recorded seed and divided by a certified upper bound
of the zero-padded convolution's operator norm on the layer's input size (FFT on a grid of
size ≥ n + k − 1, float64; see :func:`models.lipschitz_bounds.conv_operator_norm_bound`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.layers.base import ZeroPaddedConvolution, same_values
from models.lipschitz_bounds import conv_operator_norm_bound, float32_cast_margin


class RandomProjectionConv2d(ZeroPaddedConvolution):
    """Zero-padded convolution with frozen, seeded Gaussian filters of operator norm ≤ 1.

    Bound: ``conv_operator_norm_bound(kernel, input_size)`` recomputed from the float32
    kernel actually held (so a kernel loaded from a file is re-certified), ≤ 1 by
    construction.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        input_size: tuple[int, int],
        *,
        seed: int,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.kernel_size = kernel_size
        self.bias = None
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.seed = int(seed)
        generator = torch.Generator("cpu").manual_seed(self.seed)
        kernel = torch.randn(
            out_channels,
            in_channels,
            kernel_size,
            kernel_size,
            generator=generator,
            dtype=torch.float64,
        )
        shrink = 1.0 - float32_cast_margin(kernel_size * kernel_size, out_channels, in_channels)
        kernel = kernel * (shrink / conv_operator_norm_bound(kernel, self.input_size))
        self.register_buffer("kernel", kernel.float())
        self._bound_cache: tuple[torch.Tensor, float] | None = None
        bound = self.lipschitz_bound()
        if bound > 1.0:
            raise ArithmeticError(f"normalised random projection has bound {bound} > 1")

    def check_input_size(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` has the spatial size the kernel was certified on."""
        if tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(
                f"random projection was certified for {self.input_size}, got {tuple(x.shape[-2:])}"
            )

    def training_kernel(self) -> torch.Tensor:
        """The frozen kernel itself (normalised once, when the layer was built)."""
        return self.kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_size(x)
        return F.conv2d(x, self.kernel, padding=self.kernel_size // 2)

    def lipschitz_bound(self) -> float:
        kernel = self.kernel.detach()
        if self._bound_cache is None or not same_values((self._bound_cache[0],), (kernel,)):
            self._bound_cache = (kernel.clone(), conv_operator_norm_bound(kernel, self.input_size))
        return self._bound_cache[1]

    def extra_repr(self) -> str:
        c_out, c_in = self.kernel.shape[:2]
        return (
            f"{c_in}, {c_out}, kernel_size={self.kernel_size}, input_size={self.input_size}, "
            f"seed={self.seed}"
        )
