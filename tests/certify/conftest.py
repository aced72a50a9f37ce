"""Shared inputs for the certification tests."""

from __future__ import annotations

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
