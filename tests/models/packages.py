"""Small real packages for the registry tests: a HyCAS network (with a certified bound) and a
plain CNN (without), saved by ``models.save_model`` and read back as the files a push sends."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models import DatasetRecord, TrainingRecord, build_hycas, save_model
from models.baselines import build_plain_cnn
from models.repository import CARD_FILE, WEIGHTS_FILE

DATASET = DatasetRecord(
    name="digits",
    source="untrained, for the test",
    train_split="none",
    train_size=0,
    test_split="none",
    test_size=0,
)
TRAINING = TrainingRecord(
    command="models.save_model",
    seed=0,
    settings={"epochs": 0},
    loss="none",
    final_loss=0.0,
    wall_seconds=0.0,
    device="cpu",
    torch_version=torch.__version__,
)


def save_package(
    repository: Path,
    model_id: str = "tiny",
    version: str | None = None,
    architecture: str = "hycas",
) -> Path:
    """An untrained package of ``architecture`` (``hycas`` or ``cnn``) at ``version`` (default:
    the next one); its folder."""
    torch.manual_seed(0)
    if architecture == "hycas":
        model = build_hycas((1, 8, 8), 3, width=4, stage_depths=(1,))
    else:
        model = build_plain_cnn((1, 8, 8), 3, width=4, hidden=8)
    card = save_model(
        model,
        model_id=model_id,
        class_names=["zero", "one", "two"],
        sigma=0.25,
        dataset=DATASET,
        training=TRAINING,
        metrics={"clean_accuracy": 0.5},
        repository=repository,
        version=version,
    )
    return repository / card.id / card.version


def package_files(folder: Path) -> dict[str, bytes]:
    """The files a push sends: the card and its weights."""
    return {name: (folder / name).read_bytes() for name in (CARD_FILE, WEIGHTS_FILE)}


def with_card(files: dict[str, bytes], **changes: object) -> dict[str, bytes]:
    """``files`` with fields of the card changed (the weights untouched)."""
    card = json.loads(files[CARD_FILE])
    card.update(changes)
    return {**files, CARD_FILE: json.dumps(card).encode()}
