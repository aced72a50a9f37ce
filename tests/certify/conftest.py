"""Shared inputs for the certification tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def image() -> torch.Tensor:
    """A small fixed image in [0.25, 0.75], away from the [0, 1] edges."""
    generator = torch.Generator().manual_seed(1234)
    return 0.25 + 0.5 * torch.rand((1, 8, 8), generator=generator)


@pytest.fixture
def image64() -> torch.Tensor:
    """A float64 image in [0.25, 0.75] whose values are not float32 numbers."""
    generator = torch.Generator().manual_seed(4321)
    return 0.25 + 0.5 * torch.rand((1, 8, 8), generator=generator, dtype=torch.float64)


@pytest.fixture
def tf32_on() -> Iterator[None]:
    """TensorFloat-32 allowed for the test (PyTorch's cuDNN default); the flags restored after."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
