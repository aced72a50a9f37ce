"""Device names as the command line takes them: ``auto``, ``cpu``, ``cuda``, ``cuda:1``…"""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` is CUDA when it is available (checked in the calling process), else the CPU."""
    if isinstance(name, str) and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def available_device(name: str | torch.device) -> torch.device:
    """:func:`resolve_device`, refused with a ``ValueError`` that says why when this machine
    cannot run it (an unknown name, no CUDA, a GPU index it does not have). For commands that
    run now, in this process: it asks ``torch.cuda`` (a worker parent must not, before it
    forks)."""
    try:
        device = resolve_device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {str(name)!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(name)!r}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(name)!r}: this machine has {torch.cuda.device_count()} GPU(s)"
            )
    elif device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(name)!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device
