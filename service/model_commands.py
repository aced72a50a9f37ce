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
import math
import os
import sys
from collections.abc import Callable, Sequence
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
        radii = tuple(float(r) for r in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"radii {text!r} are not numbers like 0.25,0.5") from None
    if not all(math.isfinite(r) and r >= 0 for r in radii):
        raise argparse.ArgumentTypeError(f"radii {text!r} must be finite and at least 0")
    return radii


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (``None``: no upper end)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            span = f"at least {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"{value} is not {span}")
        return value

    return parse


positive_int = whole_number(1)
seed_option = whole_number(0, 2**63 - 1)
"""A seed, as :mod:`certify` takes it: ``[0, 2**63)``."""


def _writable_prefix(path: str | None, what: str) -> None:
    """Refuse, before any work, an output path prefix whose folder cannot be made or written."""
    if path is None:
        return
    if not Path(path).name:
        raise ValueError(f"{what} {path!r} names no file: give a path prefix such as out/report")
    folder = Path(path).parent
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir() or not os.access(parent, os.W_OK):
                raise ValueError(f"{what} {path!r}: {parent} is not a folder this user can write")
            return


def parse_shape(text: str) -> tuple[int, int, int]:
    """``C,H,W`` (or ``CxHxW``) as three integers, for argparse."""
    try:
        parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r} is not C,H,W (e.g. 1,28,28)") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"shape {text!r} has {len(parts)} numbers; want C,H,W")
    return parts  # type: ignore[return-value]


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
    from models.devices import available_device
    from models.evaluation import format_summary, write_report
    from models.training import train_and_package

    _writable_prefix(args.report, "--report")
    available_device(args.device)
    outcome = train_and_package(
        training_request_from(args),
        repository=args.repository,
        version=args.version,
        device=args.device,
        progress=show_progress(args),
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
    from models.devices import available_device
    from models.evaluation import EvaluationSettings, evaluate_package, format_summary

    _writable_prefix(args.output, "--output")
    available_device(args.device)

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
        progress=show_progress(args),
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

    source = RepositorySource(repository)
    store = source.store
    if store.is_local and not Path(store.root).is_dir():
        what = "is not a folder" if Path(store.root).exists() else "does not exist"
        raise ValueError(f"the model repository {store.location} {what}")
    cache = ModelCache(source, "cpu")
    statuses = cache.version_statuses()
    listing = []
    for model_id in cache.model_ids():
        entry: dict[str, Any] = {
            "id": model_id,
            "versions": [
                {"version": s.version, "status": s.status}
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


def _registered(checked: Any, where: str) -> int:
    card = checked.card
    bound = "none (smoothing only)" if card.lipschitz_bound is None else card.lipschitz_bound
    print(
        f"registered {card.id} version {card.version} in {where} (sha256 {card.sha256}; "
        f"architecture {card.architecture}; Lipschitz bound {bound})"
    )
    return 0


def _push_over_http(path: Path, server: str, api_key: str | None, max_bytes: int) -> int:
    import httpx

    from models.registration import files_from_path

    files = files_from_path(path, max_bytes)
    headers = {} if api_key is None else {"X-API-Key": api_key}
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files.items()]
    try:
        response = httpx.post(
            server.rstrip("/") + "/v1/models", files=parts, headers=headers, timeout=300
        )
    except httpx.HTTPError as error:
        raise ValueError(f"cannot reach {server}: {error}") from None
    body = response.json() if "json" in response.headers.get("content-type", "") else {}
    if response.status_code != 201:
        error = body.get("error", {})
        raise ValueError(
            f"{server} refused the package ({response.status_code} "
            f"{error.get('code', 'error')}): {error.get('message', response.text[:200])}"
        )
    print(
        f"registered {body['id']} version {body['version']} on {server} (sha256 "
        f"{body['sha256']}; Lipschitz bound {body['lipschitz_bound']})"
    )
    return 0


def run_models_push(args: argparse.Namespace) -> int:
    import os

    from models.package_store import PackageStore, VersionExistsError
    from models.registration import check_package, files_from_path, register_package

    max_bytes = args.max_bytes
    if args.server is not None:
        if args.skip_existing:
            raise ValueError("--skip-existing is for a repository, not for --server")
        api_key = args.api_key or os.environ.get("HYCAS_API_KEY")
        return _push_over_http(Path(args.path), args.server, api_key, max_bytes)
    store = PackageStore(args.repository)
    files = files_from_path(args.path, max_bytes)
    try:
        return _registered(register_package(store, files), store.location)
    except VersionExistsError:
        if not args.skip_existing:
            raise
    card = check_package(files).card
    registered = store.read_card(card.id, card.version)
    if registered.sha256 != card.sha256:
        raise ValueError(
            f"{store.location} holds {card.id!r} version {card.version} with other weights "
            f"(sha256 {registered.sha256}, not {card.sha256}); push it as a new version"
        )
    print(f"{card.id} version {card.version} is already in {store.location} (same sha256)")
    return 0


def _class_names(path: str) -> list[str]:
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    names = [name for name in names if name]
    if len(names) < 2:
        raise ValueError(f"--classes {path} names {len(names)} class(es); a classifier has ≥ 2")
    return names


def run_models_import(args: argparse.Namespace) -> int:
    import tempfile

    from models.onnx_classifier import import_onnx, parse_normalization
    from models.package_store import PackageStore
    from models.registration import files_from_path, register_package

    store = PackageStore(args.repository)
    existing = store.versions(args.model_id)
    version = str(int(existing[-1]) + 1) if existing else "1"
    with tempfile.TemporaryDirectory() as staging:
        card = import_onnx(
            args.onnx,
            model_id=args.model_id,
            input_shape=args.input_shape,
            class_names=_class_names(args.classes),
            sigma=args.sigma,
            normalization=parse_normalization(args.normalization, args.input_shape[0]),
            repository=staging,
            version=version,
        )
        package = Path(staging) / card.id / card.version
        checked = register_package(store, files_from_path(package, args.max_bytes))
    return _registered(checked, store.location)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def show_progress(args: argparse.Namespace) -> bool:
    """A progress bar (on stderr) only for a person watching: a terminal, and no ``--quiet``."""
    return not args.quiet and sys.stderr.isatty()


_CERTIFICATION_OPTIONS: dict[str, tuple[type, str]] = {
    "n0": (int, "CERTIFY selection samples per image"),
    "n": (int, "CERTIFY estimation samples per image"),
    "alpha": (float, "failure probability of each smoothing certificate"),
    "batch_size": (int, "noisy samples per forward pass"),
    "ensemble": (int, "frozen draws K of F_K"),
}
"""The evaluation's certification settings (:data:`models.training.EVALUATION_OPTIONS`): their
type and help, for ``hycas evaluate`` and, as ``--eval-<name>``, ``hycas train``."""


def _add_certification_options(parser: argparse.ArgumentParser, prefix: str) -> None:
    for name, (kind, help_text) in _CERTIFICATION_OPTIONS.items():
        parser.add_argument(f"--{prefix}{name.replace('_', '-')}", type=kind, help=help_text)


def _add_dataset_options(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--dataset`` and ``--data-path``, as :func:`models.data.load_dataset` takes them (the
    names of :data:`models.data.DATASETS`, not imported here to keep ``--help`` fast)."""
    parser.add_argument(
        "--dataset",
        default=default,
        help="digits (default), dermamnist, pneumoniamnist, chestmnist, cifar10, cifar100 or "
        "image-folder",
    )
    parser.add_argument("--data-path", help="the dataset's file or directory (not for digits)")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repository",
        help="model repository (default $HYCAS_MODEL_REPOSITORY, else the shipped one)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda…")
    parser.add_argument(
        "--quiet",
        "--no-progress",
        dest="quiet",
        action="store_true",
        help="no progress bar (there is none either when stderr is not a terminal)",
    )


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
    _add_dataset_options(train)
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
    train.add_argument(
        "--margin-inputs",
        choices=("clean", "noisy", "split"),
        help="the margin term on the clean inputs (default: a second batch per step), on "
        "the noisy ones (the same forward pass as the noise term: about half the step), or "
        "split: on the clean inputs of --margin-samples images of each batch, the noise term "
        "on the others (one forward pass of the batch)",
    )
    train.add_argument(
        "--margin-samples",
        type=int,
        help="with clean margin inputs: take the margin term on this many images of each batch "
        "(a random subset; default: all), so the second batch is that much smaller; with "
        "split ones (required): the images of each batch that go in clean",
    )
    train.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        help="forward passes of training (default float32); bfloat16: mixed precision for "
        "GPUs, weights and certification stay float32",
    )
    train.add_argument("--seed", type=seed_option)
    train.add_argument(
        "--beta-floor",
        type=float,
        help="least residual mix β of every hybrid block, kept after each step (default 0)",
    )
    train.add_argument(
        "--gate-floor",
        type=float,
        help="least weight of every gate branch, kept after each step (default 0; ≤ 1/branches)",
    )
    _add_certification_options(train, "eval-")
    train.add_argument("--eval-limit", type=int, help="evaluate on the first N test images only")
    train.add_argument("--threads", type=positive_int, help="CPU threads (default: torch's choice)")
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
    _add_dataset_options(evaluate, default="digits")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--limit", type=int, help="only the first N images of the split")
    evaluate.add_argument("--output", required=True, help="path prefix of the .json and .png")
    evaluate.add_argument("--sigma", type=float, help="smoothing noise (default: the card's)")
    _add_certification_options(evaluate, "")
    evaluate.add_argument("--seed", type=seed_option)
    evaluate.add_argument("--radii", type=_radii, help="report radii (default 0.25,0.5,0.75,1)")
    evaluate.add_argument("--no-smoothing", action="store_true", help="margin certificate only")
    evaluate.add_argument(
        "--attack",
        action="store_true",
        help="also attack each classifier (minimum-norm L2, DDN): accuracy under attack beside "
        "the certified accuracy (an upper bound) and each image's ratio found / certified",
    )
    evaluate.add_argument("--attack-steps", type=int, help="DDN steps per attack (100)")
    evaluate.add_argument("--attack-restarts", type=int, help="DDN starts on F_K (2)")
    evaluate.add_argument(
        "--attack-samples-per-step", type=int, help="noisy samples per step on g (16)"
    )
    evaluate.add_argument(
        "--attack-predict-n", type=int, help="samples of each PREDICT check on g (default n)"
    )
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

    push = models_sub.add_parser(
        "push",
        help="register a package (folder or .tar/.zip) on a server, or in a repository",
        description="Check a package (card, weights' SHA-256, the network it builds, its "
        "recomputed Lipschitz bound) and register it: on a running server with --server "
        "(POST /v1/models with an admin key from --api-key or $HYCAS_API_KEY), else directly "
        "in the repository. Versions are immutable: an existing version is refused.",
    )
    push.add_argument("path", help="a package folder (model.json + weights) or an archive of it")
    push.add_argument("--server", help="the service's URL, e.g. http://gateway:8000")
    push.add_argument("--api-key", help="an admin key (default $HYCAS_API_KEY)")
    push.add_argument(
        "--repository",
        help="without --server: folder or URL of the repository (default "
        "$HYCAS_MODEL_REPOSITORY, else the shipped one)",
    )
    push.add_argument(
        "--max-bytes", type=int, default=2**31, help="largest package read (unpacked)"
    )
    push.add_argument(
        "--skip-existing",
        action="store_true",
        help="without --server: succeed when the version is there with the same SHA-256",
    )
    push.set_defaults(handler=run_models_push)

    onnx = models_sub.add_parser(
        "import",
        help="wrap an ONNX classifier into a package (certified by smoothing only)",
        description="Check an ONNX graph (one float32 input [B, C, H, W], one output [B, K]) "
        "and register it as a package whose card says architecture onnx and lipschitz_bound "
        "null: smoothing and the radius test certify it, margin requests are refused. Needs "
        "the onnx extra (onnxruntime).",
    )
    onnx.add_argument("onnx", help="the .onnx file")
    onnx.add_argument("--model-id", required=True)
    onnx.add_argument("--input-shape", required=True, type=parse_shape, help="C,H,W")
    onnx.add_argument("--classes", required=True, help="a text file, one class name a line")
    onnx.add_argument(
        "--sigma", required=True, type=float, help="the Gaussian noise σ it was trained with"
    )
    onnx.add_argument(
        "--normalization",
        help="mean,std applied before the graph (or C means then C stds); default none",
    )
    onnx.add_argument(
        "--repository",
        help="folder or URL (default $HYCAS_MODEL_REPOSITORY, else the shipped one)",
    )
    onnx.add_argument("--max-bytes", type=int, default=2**31, help="largest graph read")
    onnx.set_defaults(handler=run_models_import)
