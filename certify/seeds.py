"""Seeds of a certification: drawn once, recorded in the result, expanded deterministically.

A result records one integer seed; the generators a run needs (input noise, the model's
internal randomness Ω, the frozen draws of an ensemble) are seeded from it through
``numpy.random.SeedSequence``, so the same seed replays the same run on the same device,
torch version and batch size.
"""

from __future__ import annotations

import secrets

import numpy as np

SEED_BITS = 63
"""Seeds are non-negative and below 2**63, so they survive int64 columns and JSON readers."""


def fresh_seed() -> int:
    """A new seed from the operating system's entropy, for runs started without one."""
    return secrets.randbits(SEED_BITS)


def derive_seeds(seed: int, count: int) -> tuple[int, ...]:
    """``count`` independent child seeds of ``seed`` (the same seed always gives the same ones)."""
    state = np.random.SeedSequence(seed).generate_state(count, dtype=np.uint64)
    return tuple(int(word) >> (64 - SEED_BITS) for word in state)
