"""``hycas train`` end to end: data → network → training → test-split evaluation → package.

A :class:`TrainingRequest` holds every option of the command and writes itself back as the
command line (:meth:`TrainingRequest.command_line`), which the model card records. On the CPU,
running that command again with the same torch version reproduces the weights bit for bit
(the thread count is part of the command); CUDA kernels may sum in another order each run.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.architectures import build_model
from models.card import DatasetRecord, ModelCard, TrainingRecord
from models.data import intended_input_of, load_dataset
from models.devices import resolve_device
from models.evaluation import EvaluationReport, EvaluationSettings, evaluate_classifier
from models.repository import package_directory, save_model
from models.training.trainer import TrainingRun, TrainingSettings, train_classifier

EVALUATION_OPTIONS = ("n0", "n", "alpha", "batch_size", "ensemble")
"""The evaluation settings ``hycas train`` takes (as ``--eval-<name>``); the smoothing sigma
and the seed are the training ones, the report radii the defaults."""


@dataclass(frozen=True)
class TrainingRequest:
    """Every option of ``hycas train`` that shapes the package (where it is written and on
    which device it runs do not, and are not part of it)."""

    model_id: str
    dataset: str = "digits"
    data_path: str | None = None
    architecture: str = "hycas"
    config: dict[str, Any] = field(default_factory=dict)
    """Architecture options overriding the defaults (``--config key=JSON``)."""
    training: TrainingSettings = field(default_factory=TrainingSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    """The test-split evaluation recorded in the card; only :data:`EVALUATION_OPTIONS` may
    differ from the defaults."""
    eval_limit: int | None = None
    """Evaluate on the first ``eval_limit`` test images only (``None``: all of them)."""
    threads: int | None = None
    """CPU threads of torch (``None``: torch's default, recorded as the number used). CPU
    results depend on it through the order of floating-point sums."""

    def __post_init__(self) -> None:
        fixed = {
            f.name
            for f in dataclasses.fields(EvaluationSettings)
            if f.name not in EVALUATION_OPTIONS
            and getattr(self.evaluation, f.name) != getattr(EvaluationSettings(), f.name)
        }
        if fixed:
            raise ValueError(
                f"hycas train sets the evaluation's {sorted(fixed)} itself (sigma and seed "
                "are the training ones); evaluate with other values through hycas evaluate"
            )

    def evaluation_settings(self) -> EvaluationSettings:
        """The evaluation at the training sigma, seeded with the training seed."""
        return dataclasses.replace(
            self.evaluation, sigma=self.training.sigma, seed=self.training.seed
        )

    def command_line(self) -> str:
        """``hycas train`` with every option of this request written out."""
        options: list[tuple[str, Any]] = []
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name == "config":
                options += [("config", f"{key}={json.dumps(v)}") for key, v in value.items()]
            elif item.name == "training":
                # An unset optional setting (None) is its default: nothing to write.
                options += [(k, v) for k, v in value.to_dict().items() if v is not None]
            elif item.name == "evaluation":
                options += [(f"eval_{name}", getattr(value, name)) for name in EVALUATION_OPTIONS]
            elif value is not None:
                options.append((item.name, value))
        words = ["hycas", "train"]
        for name, value in options:
            words += ["--" + name.replace("_", "-"), str(value)]
        return shlex.join(words)


@dataclass(frozen=True)
class TrainingOutcome:
    """The package written, how training went and the evaluation recorded in the card."""

    card: ModelCard
    package: Path
    run: TrainingRun
    report: EvaluationReport


def train_and_package(
    request: TrainingRequest,
    *,
    repository: str | Path | None = None,
    version: str | int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> TrainingOutcome:
    """Train the network ``request`` describes, evaluate it on the test split, and save it as a
    new version of ``request.model_id`` in the repository (the default one when ``None``).
    torch's thread count is ``request.threads`` meanwhile, and restored afterwards."""
    previous_threads = torch.get_num_threads()
    if request.threads is not None:
        torch.set_num_threads(request.threads)
    try:
        return _train_evaluate_save(
            dataclasses.replace(request, threads=torch.get_num_threads()),
            repository=repository,
            version=version,
            device=resolve_device(device),
            progress=progress,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _train_evaluate_save(
    request: TrainingRequest,
    *,
    repository: str | Path | None,
    version: str | int | None,
    device: torch.device,
    progress: bool,
) -> TrainingOutcome:
    train_set = load_dataset(request.dataset, "train", request.data_path)
    # Test labels follow the train classes by name: a test split may lack a class.
    test_set = load_dataset(
        request.dataset, "test", request.data_path, class_names=train_set.class_names
    )
    if request.eval_limit is not None:
        test_set = test_set.head(request.eval_limit)
    settings = request.training
    torch.manual_seed(settings.seed)
    model = build_model(
        request.architecture,
        train_set.input_shape,
        len(train_set.class_names),
        request.config,
        trainable=True,
    )
    run = train_classifier(model, train_set, settings, device=device, progress=progress)
    report = evaluate_classifier(
        model,
        test_set,
        request.evaluation_settings(),
        model_id=request.model_id,
        version="unsaved",
        sha256="",
        progress=progress,
    )
    card = save_model(
        model.cpu(),
        model_id=request.model_id,
        class_names=train_set.class_names,
        sigma=settings.sigma,
        dataset=DatasetRecord(
            name=train_set.name,
            source=train_set.source,
            train_split=train_set.split_recipe,
            train_size=len(train_set),
            test_split=test_set.split_recipe,
            test_size=len(test_set),
        ),
        training=TrainingRecord(
            command=request.command_line(),
            seed=settings.seed,
            settings=settings.to_dict(),
            loss=settings.loss_formula(),
            final_loss=run.epoch_losses[-1],
            wall_seconds=round(run.wall_seconds, 1),
            device=run.device,
            torch_version=torch.__version__,
        ),
        metrics=dataclasses.asdict(report.summary),
        intended_input=intended_input_of(request.dataset, train_set, request.data_path),
        repository=repository,
        version=version,
    )
    report = dataclasses.replace(report, version=card.version, sha256=card.sha256)
    return TrainingOutcome(
        card=card,
        package=package_directory(card.id, card.version, repository=repository),
        run=run,
        report=report,
    )
