"""``hycas evaluate``: a packaged model on a dataset split → JSON report and PNG plot."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from models.data import load_dataset
from models.evaluation.evaluate import evaluate_classifier
from models.evaluation.plot import plot_certified_accuracy
from models.evaluation.report import EvaluationReport, EvaluationSettings
from models.repository import load


@dataclass(frozen=True)
class EvaluationOutput:
    """The report and where it was written."""

    report: EvaluationReport
    json_path: Path
    plot_path: Path


def evaluate_package(
    model_id: str,
    *,
    dataset: str,
    output: str | Path,
    settings: EvaluationSettings,
    version: str | None = None,
    split: str = "test",
    data_path: str | None = None,
    limit: int | None = None,
    repository: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
) -> EvaluationOutput:
    """Evaluate the packaged ``model_id`` on ``split`` of ``dataset`` (its first ``limit``
    images when given) and write ``<output>.json`` and ``<output>.png``. Labels are matched
    to the card's class names by name. A ``settings.sigma`` of ``None`` is the card's training
    sigma."""
    model, card = load(model_id, version, repository=repository, device=device)
    if settings.sigma is None:
        settings = dataclasses.replace(settings, sigma=card.sigma)
    data = load_dataset(dataset, split, data_path, class_names=card.class_names)
    if limit is not None:
        data = data.head(limit)
    if data.input_shape != card.input_shape:
        raise ValueError(
            f"{dataset}/{split} has inputs {data.input_shape}; {model_id} expects "
            f"{card.input_shape}"
        )
    report = evaluate_classifier(
        model,
        data,
        settings,
        model_id=card.id,
        version=card.version,
        sha256=card.sha256,
        progress=progress,
    )
    return write_report(report, output)


def write_report(report: EvaluationReport, output: str | Path) -> EvaluationOutput:
    """Write ``report`` as ``<output>.json`` and its certified-accuracy plot as ``<output>.png``."""
    prefix = Path(output)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    json_path = prefix.with_name(prefix.name + ".json")
    report.write_json(json_path)
    summary, s = report.summary, report.summary.settings
    plot_path = plot_certified_accuracy(
        {report.model_id: report},
        prefix.with_name(prefix.name + ".png"),
        title=(
            f"{report.model_id} v{report.version} on {summary.dataset}/{summary.split} "
            f"({summary.images} images): σ={s.sigma:g}, n={s.n}, α={s.alpha:g}, K={s.ensemble}"
        ),
    )
    return EvaluationOutput(report=report, json_path=json_path, plot_path=plot_path)
