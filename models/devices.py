"""Device names as the command line takes them: ``auto``, ``cpu``, ``cuda``, ``cuda:1``…"""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` is CUDA when it is available (checked in the calling process), else the CPU."""
    if isinstance(name, str) and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
