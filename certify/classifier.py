"""What the certificates read from a classifier, and the one rule for plain modules.

A classifier is any callable mapping float32 ``[B, C, H, W]`` to logits ``[B, K]``. The
networks of :mod:`models` implement ``models.protocol.CertifiableModel`` and declare two
members the certificates use:

- ``stochastic``: when true, the forward pass draws internal randomness Ω and accepts
  ``generator=`` (a fresh Ω per sample) and ``omega_seed=`` (one frozen Ω for the batch);
- ``lipschitz_bound()``: a certified L2 bound of input → logits for every Ω, or ``None``.

The rule for a classifier that declares neither (a plain ``torch.nn.Module``, a function): it
is deterministic and has no certified bound, so it is called as ``model(x)`` and has no margin
certificate unless the caller passes a bound. This module is the only place that rule lives;
:mod:`certify` does not import :mod:`models`.
"""

from __future__ import annotations

from typing import Any


def is_stochastic(model: Any) -> bool:
    """Whether the classifier declares internal randomness Ω (``model.stochastic``)."""
    return bool(getattr(model, "stochastic", False))


def declared_lipschitz_bound(model: Any) -> float | None:
    """The classifier's ``lipschitz_bound()``, or ``None`` when it states none."""
    bound = getattr(model, "lipschitz_bound", None)
    return None if bound is None else bound()
