"""``GET /v1/defaults``: the parameters a request leaves out, and their upper limits."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from service.api.deps import CallerDep, SettingsDep
from workers.methods import DEFAULT_METHODS, REGISTRY

router = APIRouter(prefix="/v1", tags=["certify"])


class MethodSummary(BaseModel):
    summary: str
    """What the method certifies."""
    needs_lipschitz_bound: bool
    """Refused for a model without a certified Lipschitz bound."""


class ParameterDefaults(BaseModel):
    """What ``POST /v1/certify`` uses for an option it is not sent (``sigma``: the model
    card's; ``seed``: a fresh one), and the largest value each count may take."""

    methods: tuple[str, ...]
    """Default methods of a model with a certified Lipschitz bound (one without gets those
    that need no bound)."""
    available_methods: dict[str, MethodSummary]
    """Every method the service runs."""
    alpha: float
    n0: int
    n: int
    batch_size: int
    ensemble: int
    max_n0: int
    max_n: int
    max_batch_size: int
    max_ensemble: int


@router.get("/defaults", response_model=ParameterDefaults, summary="Default parameters")
def defaults(_: CallerDep, settings: SettingsDep) -> ParameterDefaults:
    return ParameterDefaults(
        methods=tuple(DEFAULT_METHODS),
        available_methods={
            name: MethodSummary(summary=m.summary, needs_lipschitz_bound=m.needs_lipschitz_bound)
            for name, m in REGISTRY.items()
        },
        alpha=settings.default_alpha,
        n0=settings.default_n0,
        n=settings.default_n,
        batch_size=settings.default_batch_size,
        ensemble=settings.default_ensemble,
        max_n0=settings.max_n0,
        max_n=settings.max_n,
        max_batch_size=settings.max_batch_size,
        max_ensemble=settings.max_ensemble,
    )
