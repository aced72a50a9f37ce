"""``hycas train``, ``hycas evaluate`` and ``hycas models list``: thin shells over
:mod:`models.training`, :mod:`models.evaluation` and the model cache.

The options of ``hycas train`` are the fields of :class:`models.training.TrainingRequest`
(its training settings by their names, its evaluation options as ``--eval-<name>``; same
defaults), so the command a model card records parses back into the same request. Heavy
imports happen inside the handlers, so ``hycas --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _config_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--config takes KEY=JSON (e.g. width=48), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"the value of {key!r} is not JSON: {value!r}") from None


def _radii(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(r) for r in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"radii {text!r} are not numbers like 0.25,0.5") from None


def _given(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The options among ``names`` given on the command line (the rest keep their defaults)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def training_request_from(args: argparse.Namespace) -> Any:
    """The :class:`models.training.TrainingRequest` of parsed ``hycas train`` options."""
    from models.evaluation import EvaluationSettings
    from models.training import EVALUATION_OPTIONS, TrainingRequest, TrainingSettings

    top = ["model_id", "dataset", "data_path", "architecture", "eval_limit", "threads"]
    training = _given(args, [f.name for f in dataclasses.fields(TrainingSettings)])
    evaluation = {
        name: getattr(args, f"eval_{name}")
        for name in EVALUATION_OPTIONS
        if getattr(args, f"eval_{name}") is not None
    }
    return TrainingRequest(
        **_given(args, top),
        config=dict(args.config),
        training=TrainingSettings(**training),
        evaluation=EvaluationSettings(**evaluation),
    )


def run_train(args: argparse.Namespace) -> int:
    from models.evaluation import format_summary, write_report
    from models.training import train_and_package

    outcome = train_and_package(
        training_request_from(args),
        repository=args.repository,
        version=args.version,
        device=args.device,
        progress=not args.no_progress,
    )
    card = outcome.card
    print(f"wrote {card.id} version {card.version} to {outcome.package} (sha256 {card.sha256})")
    print(
        f"training: {outcome.run.steps} steps in {outcome.run.wall_seconds:.1f} s on "
        f"{outcome.run.device}; final loss {card.training.final_loss:.4f}; Lipschitz bound "
        f"{card.lipschitz_bound}"
    )
    print(format_summary(outcome.report.summary))
    if args.report is not None:
        written = write_report(outcome.report, args.report)
        print(f"wrote {written.json_path} and {written.plot_path}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from models.evaluation import EvaluationSettings, evaluate_package, format_summary

    settings = _given(
        args, [f.name for f in dataclasses.fields(EvaluationSettings) if f.name != "smoothing"]
    )
    output = evaluate_package(
        args.model,
        version=args.model_version,
        dataset=args.dataset,
        split=args.split,
        data_path=args.data_path,
        limit=args.limit,
        output=args.output,
        settings=EvaluationSettings(**settings, smoothing=not args.no_smoothing),
        repository=args.repository,
        device=args.device,
        progress=not args.no_progress,
    )
    print(format_summary(output.report.summary))
    print(f"wrote {output.json_path} and {output.plot_path}")
    return 0


def _classes(names: Sequence[str]) -> str:
    shown = ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:3])}, …, {names[-1]}"
    return f"{len(names)} ({shown})"


def model_listing(repository: str | None) -> list[dict[str, Any]]:
    """Every model: its versions (each loaded to check it, as the server does), its default
    version (the newest that loads) and what that version's card says."""
    from workers.model_cache import ModelCache, ModelUnavailableError, RepositorySource

    cache = ModelCache(RepositorySource(None if repository is None else Path(repository)), "cpu")
    statuses = cache.version_statuses()
    listing = []
    for model_id in cache.model_ids():
        entry: dict[str, Any] = {
            "id": model_id,
            "versions": [
                {"version": s.version, "status": "available" if s.available else "unavailable"}
                | ({} if s.available else {"reason": s.reason})
                for s in statuses
                if s.model_id == model_id
            ],
            "default_version": None,
        }
        try:
            loaded = cache.get(model_id)
        except ModelUnavailableError:
            listing.append(entry)
            continue
        entry.update(
            default_version=loaded.version,
            input_shape=list(loaded.input_shape),
            class_names=list(loaded.class_names),
            sigma=loaded.sigmas[0],
            lipschitz_bound=loaded.card.get("lipschitz_bound"),
        )
        listing.append(entry)
    return listing


def run_models_list(args: argparse.Namespace) -> int:
    listing = model_listing(args.repository)
    if args.json:
        print(json.dumps({"models": listing}, indent=2))
        return 0
    if not listing:
        print("the model repository holds no models")
        return 0
    rows = [("MODEL", "VERSIONS", "DEFAULT", "INPUT", "CLASSES", "SIGMA", "BOUND")]
    for entry in listing:
        versions = ",".join(v["version"] for v in entry["versions"])
        if entry["default_version"] is None:
            rows.append((entry["id"], versions, "-", "-", "-", "-", "-"))
            continue
        rows.append(
            (
                entry["id"],
                versions,
                entry["default_version"],
                "×".join(map(str, entry["input_shape"])),
                _classes(entry["class_names"]),
                f"{entry['sigma']:g}",
                f"{entry['lipschitz_bound']}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    for entry in listing:
        for version in entry["versions"]:
            if version["status"] == "unavailable":
                print(f"{entry['id']} v{version['version']} unavailable: {version['reason']}")
    return 0


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repository",
        help="model repository (default $HYCAS_MODEL_REPOSITORY, else the shipped one)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda…")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_model_commands(sub: Any) -> None:
    """Register ``train`` and ``evaluate`` on the ``hycas`` subparsers.

    Options left out keep the defaults of :class:`models.training.TrainingRequest` and
    :class:`models.evaluation.EvaluationSettings` (printed in full by the card's command).
    """
    train = sub.add_parser(
        "train",
        help="train a model on a dataset, evaluate it on the test split, write a package",
        description="Train with Gaussian noise at --sigma (a fresh Ω per sample) and an optional "
        "Lipschitz-margin term, evaluate on the test split, and write a new package version. "
        "Defaults: see models.training.TrainingRequest; the card records every value.",
    )
    train.add_argument("--model-id", required=True, help="package id, e.g. digits-hycas")
    train.add_argument(
        "--dataset",
        help="digits (default), dermamnist, pneumoniamnist, "
        "chestmnist, cifar10, cifar100 or image-folder",
    )
    train.add_argument("--data-path", help="the dataset's file or directory (not for digits)")
    train.add_argument("--architecture", help="hycas (default), lipschitz or cnn")
    train.add_argument(
        "--config",
        type=_config_option,
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="architecture option, repeatable (e.g. --config width=48)",
    )
    train.add_argument("--sigma", type=float, help="training noise σ (default 0.25)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--learning-rate", type=float, help="peak of the one-cycle schedule")
    train.add_argument("--logit-scale", type=float, help="t: logits × t before the softmax")
    train.add_argument("--margin-weight", type=float, help="λ in [0, 1] (default 0: none)")
    train.add_argument("--margin-radius", type=float, help="r, the radius the margin aims at")
    train.add_argument("--seed", type=int)
    train.add_argument("--eval-n0", type=int, help="CERTIFY selection samples per test image")
    train.add_argument("--eval-n", type=int, help="CERTIFY estimation samples per test image")
    train.add_argument("--eval-alpha", type=float)
    train.add_argument("--eval-batch-size", type=int)
    train.add_argument("--eval-ensemble", type=int, help="frozen draws K of F_K")
    train.add_argument("--eval-limit", type=int, help="evaluate on the first N test images only")
    train.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    train.add_argument("--version", help="package version (default: latest + 1)")
    train.add_argument(
        "--report", help="also write the test evaluation as <REPORT>.json and <REPORT>.png"
    )
    _add_common(train)
    train.set_defaults(handler=run_train)

    evaluate = sub.add_parser(
        "evaluate",
        help="clean and certified accuracy of a packaged model -> JSON and PNG",
        description="Certify every image of a dataset split with randomized smoothing and the "
        "Lipschitz margin; write <output>.json and <output>.png. Defaults: see "
        "models.evaluation.EvaluationSettings (n0 100, n 10000, alpha 0.001, K 16).",
    )
    evaluate.add_argument("--model", required=True, help="model id, e.g. digits-hycas")
    evaluate.add_argument("--model-version", help="default: the latest")
    evaluate.add_argument("--dataset", default="digits")
    evaluate.add_argument("--data-path", help="the dataset's file or directory (not for digits)")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--limit", type=int, help="only the first N images of the split")
    evaluate.add_argument("--output", required=True, help="path prefix of the .json and .png")
    evaluate.add_argument("--sigma", type=float, help="smoothing noise (default: the card's)")
    evaluate.add_argument("--n0", type=int)
    evaluate.add_argument("--n", type=int)
    evaluate.add_argument("--alpha", type=float)
    evaluate.add_argument("--batch-size", type=int)
    evaluate.add_argument("--ensemble", type=int, help="frozen draws K of F_K")
    evaluate.add_argument("--seed", type=int)
    evaluate.add_argument("--radii", type=_radii, help="report radii (default 0.25,0.5,0.75,1)")
    evaluate.add_argument("--no-smoothing", action="store_true", help="margin certificate only")
    _add_common(evaluate)
    evaluate.set_defaults(handler=run_evaluate)

    models_parser = sub.add_parser("models", help="the packaged models of the repository")
    models_sub = models_parser.add_subparsers(dest="models_command", metavar="COMMAND")
    models_parser.set_defaults(handler=lambda _: _print_help(models_parser))
    listing = models_sub.add_parser(
        "list",
        help="each model: versions (each checked), default, input shape, classes, σ, bound",
    )
    listing.add_argument(
        "--repository",
        help="model repository (default $HYCAS_MODEL_REPOSITORY, else the shipped one)",
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=run_models_list)
