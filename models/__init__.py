"""HyCAS networks, their Lipschitz building blocks and certified bounds; the model repository."""

from models.card import DatasetRecord, ModelCard, Normalization, TrainingRecord
from models.hycas import HyCAS, HyCASConfig, build_hycas, default_config
from models.repository import (
    MODEL_REPOSITORY_ENV,
    ModelIntegrityError,
    UnknownModelError,
    default_repository,
    list_models,
    list_versions,
    load,
    read_card,
    read_verified_card,
    save_model,
)

__all__ = [
    "MODEL_REPOSITORY_ENV",
    "DatasetRecord",
    "HyCAS",
    "HyCASConfig",
    "ModelCard",
    "ModelIntegrityError",
    "Normalization",
    "TrainingRecord",
    "UnknownModelError",
    "build_hycas",
    "default_config",
    "default_repository",
    "list_models",
    "list_versions",
    "load",
    "read_card",
    "read_verified_card",
    "save_model",
]
