"""A small real HyCAS model served as a model source, for tests that need a model by id.

The network is built with a fixed seed (untrained: its labels are arbitrary, its certified
Lipschitz bound is real); its card carries what a repository card carries for the service.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import save

from models import build_hycas
from workers.model_cache import LoadedModel, UnknownModelError, describe_package

SMALL_MODEL_ID = "tiny-hycas"
SMALL_MODEL_SIGMA = 0.25
INPUT_SHAPE = (1, 8, 8)
CLASS_NAMES = tuple(f"digit {d}" for d in range(10))


@dataclass(frozen=True)
class SmallCard:
    fields: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.fields)


def build_small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_hycas(INPUT_SHAPE, len(CLASS_NAMES), width=8, stage_depths=(1,)).eval()


class SmallModelSource:
    """One model, ``tiny-hycas`` version ``1``, built on first load."""

    def load(self, model_id: str, version: str | None) -> LoadedModel:
        if model_id != SMALL_MODEL_ID or version not in (None, "1"):
            raise UnknownModelError(
                f"unknown model {model_id!r} version {version!r}; available: "
                f"{SMALL_MODEL_ID} (versions: 1)"
            )
        model = build_small_model()
        weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
        card = SmallCard(
            {
                "id": SMALL_MODEL_ID,
                "version": "1",
                "sha256": hashlib.sha256(weights).hexdigest(),
                "class_names": list(CLASS_NAMES),
                "sigma": SMALL_MODEL_SIGMA,
                "input_shape": list(INPUT_SHAPE),
            }
        )
        return describe_package(model, card, load_seconds=0.0)

    def model_ids(self) -> list[str]:
        return [SMALL_MODEL_ID]

    def versions(self, model_id: str) -> list[str]:
        return ["1"] if model_id == SMALL_MODEL_ID else []

    def retirements(self, model_id: str) -> dict[str, Any]:
        return {}
