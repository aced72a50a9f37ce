"""Training: noise augmentation with per-sample Ω and a Lipschitz-margin term; ``hycas train``."""

from models.training.losses import margin_cross_entropy, margin_offset
from models.training.package import (
    EVALUATION_OPTIONS,
    TrainingOutcome,
    TrainingRequest,
    train_and_package,
)
from models.training.trainer import TrainingRun, TrainingSettings, train_classifier

__all__ = [
    "EVALUATION_OPTIONS",
    "TrainingOutcome",
    "TrainingRequest",
    "TrainingRun",
    "TrainingSettings",
    "margin_cross_entropy",
    "margin_offset",
    "train_and_package",
    "train_classifier",
]
