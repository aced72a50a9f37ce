"""The model repository: versioned packages of weights and cards, loaded with integrity checks.

Layout: ``<repository>/<model id>/<version>/model.safetensors`` and ``model.json`` (the
:class:`models.card.ModelCard`), versions being positive integers; the latest is the largest.
The repository is ``$HYCAS_MODEL_REPOSITORY`` when set, else ``model_repository/`` at the top
of this source tree (the one shipped with the code).

Loading never unpickles: weights are read with safetensors only, after their SHA-256 was
compared with the card's. The network is rebuilt from the card's architecture and config, the
weights go in with ``strict=True``, and the certified Lipschitz bound is recomputed from the
loaded weights (frozen random-projection kernels included) and must not exceed the card's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from models.architectures import build_model
from models.card import CHANNEL_ORDERS, DatasetRecord, IntendedInput, ModelCard, TrainingRecord
from models.devices import resolve_device
from models.protocol import CertifiableModel
from workers.version import package_version

MODEL_REPOSITORY_ENV = "HYCAS_MODEL_REPOSITORY"
SHIPPED_REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"
"""The repository shipped in this source tree."""

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"
BOUND_DECIMALS = 12
"""The card records the certified bound rounded UP to this many decimal places, so a
re-certification on another machine (other float64 LAPACK/FFT rounding) stays below it."""

MODEL_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")
"""What a model id may be (at most 128 characters); anything else is refused before the
repository is searched."""
_VERSION = re.compile(r"[1-9][0-9]*")


class UnknownModelError(LookupError):
    """No such model or version in the repository; the message lists what exists."""


class ModelIntegrityError(RuntimeError):
    """A package that exists but must not be used: weights that do not match the card, a card
    that does not describe them, or a bound above the recorded one."""


def default_repository() -> Path:
    """``$HYCAS_MODEL_REPOSITORY`` if set, else the repository shipped with the code."""
    configured = os.environ.get(MODEL_REPOSITORY_ENV)
    return Path(configured) if configured else SHIPPED_REPOSITORY


def _root(repository: str | Path | None) -> Path:
    return Path(repository) if repository is not None else default_repository()


def check_model_id(model_id: str) -> str:
    """``model_id`` when it is a valid model id; else ``ValueError`` saying what one is."""
    if not isinstance(model_id, str) or not MODEL_ID_PATTERN.fullmatch(model_id):
        raise ValueError(
            f"model id {model_id!r} is not valid: use lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit, at most 128 characters"
        )
    return model_id


def is_version(name: str) -> bool:
    """Whether ``name`` is a version (a positive integer without leading zeros)."""
    return bool(_VERSION.fullmatch(name))


def package_directory(
    model_id: str, version: str | int, *, repository: str | Path | None = None
) -> Path:
    """Where the package of ``model_id`` at ``version`` lives (whether or not it exists)."""
    return _root(repository) / check_model_id(model_id) / str(version)


def _model_ids(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and MODEL_ID_PATTERN.fullmatch(p.name)
    )


def _versions(root: Path, model_id: str) -> list[str]:
    model_dir = root / model_id
    if not model_dir.is_dir():
        return []
    found = [
        p.name
        for p in model_dir.iterdir()
        if p.is_dir() and _VERSION.fullmatch(p.name) and (p / CARD_FILE).is_file()
    ]
    return sorted(found, key=int)


def _resolve(root: Path, model_id: str, version: str | int | None) -> Path:
    """The package directory of ``model_id`` at ``version`` (the latest when ``None``)."""
    check_model_id(model_id)
    versions = _versions(root, model_id)
    if not versions:
        known = [m for m in _model_ids(root) if _versions(root, m)]
        raise UnknownModelError(
            f"no model {model_id!r} in the repository {root}; it holds {known or 'no models'}"
        )
    if version is None:
        return root / model_id / versions[-1]
    wanted = str(version)
    if wanted not in versions:
        raise UnknownModelError(
            f"model {model_id!r} has no version {wanted!r}; its versions are {versions}"
        )
    return root / model_id / wanted


def _read_card(package: Path) -> ModelCard:
    try:
        card = ModelCard.from_dict(_load_json(package / CARD_FILE))
    except ValueError as error:
        raise ModelIntegrityError(f"the card {package / CARD_FILE} is invalid: {error}") from None
    if (card.id, card.version) != (package.parent.name, package.name):
        raise ModelIntegrityError(
            f"the card {package / CARD_FILE} describes {card.id!r} version {card.version!r}, "
            f"not the {package.parent.name!r} version {package.name!r} it is filed under"
        )
    if Path(card.weights_file).name != card.weights_file:
        raise ModelIntegrityError(f"weights_file must be a file name, got {card.weights_file!r}")
    return card


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error})") from None


def read_card(
    model_id: str, version: str | int | None = None, *, repository: str | Path | None = None
) -> ModelCard:
    """The card of ``model_id`` at ``version`` (latest by default), without loading weights."""
    return _read_card(_resolve(_root(repository), model_id, version))


def list_models(repository: str | Path | None = None) -> dict[str, ModelCard]:
    """The latest card of every model in the repository, by model id (sorted)."""
    root = _root(repository)
    return {
        model_id: _read_card(root / model_id / versions[-1])
        for model_id in _model_ids(root)
        if (versions := _versions(root, model_id))
    }


def list_versions(model_id: str, *, repository: str | Path | None = None) -> list[ModelCard]:
    """Every version's card of ``model_id``, oldest first."""
    root = _root(repository)
    _resolve(root, model_id, None)
    return [_read_card(root / model_id / v) for v in _versions(root, model_id)]


def model_ids(repository: str | Path | None = None) -> list[str]:
    """The ids of the models that have at least one version folder with a card (sorted); no
    card is read, so a package that fails to parse is still listed."""
    root = _root(repository)
    return [m for m in _model_ids(root) if _versions(root, m)]


def versions(model_id: str, *, repository: str | Path | None = None) -> list[str]:
    """The version folders of ``model_id`` that hold a card, oldest first (none: ``[]``); no
    card is read."""
    return _versions(_root(repository), check_model_id(model_id))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load(
    model_id: str,
    version: str | int | None = None,
    *,
    repository: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> tuple[CertifiableModel, ModelCard]:
    """The model ``model_id`` at ``version`` (the latest when ``None``) in eval mode on
    ``device`` (the CPU by default; ``auto`` picks CUDA when available), and its card.

    Raises :class:`UnknownModelError` (listing what exists) for an unknown id or version and
    :class:`ModelIntegrityError` when the weights' SHA-256 differs from the card's, the weights
    do not fit the card's architecture exactly, or the re-certified Lipschitz bound exceeds
    the card's.
    """
    package = _resolve(_root(repository), model_id, version)
    card = _read_card(package)
    weights_path = package / card.weights_file
    model = build_checked_model(card, _verified_weights(weights_path, card), str(weights_path))
    model = model.to(resolve_device(device))
    model.eval()
    return model, card


def build_checked_model(card: ModelCard, data: bytes, where: str) -> CertifiableModel:
    """The network ``card`` describes with the weights ``data`` (the bytes of ``where``, already
    checked against the card's SHA-256) loaded, after re-certifying its Lipschitz bound.

    Raises :class:`ModelIntegrityError` when ``data`` is not a safetensors file, the weights do
    not fit the card's architecture and config exactly, or the bound recomputed from them
    exceeds the card's (or the card records one for a network that has none).
    """
    # The bytes that were hashed are the bytes that are parsed: nothing is read twice.
    try:
        state = load_safetensors(data)
    except SafetensorError as error:
        raise ModelIntegrityError(f"{where} is not a safetensors file: {error}") from None
    try:
        model = build_model(card.architecture, card.input_shape, card.num_classes, card.config)
        model.load_state_dict(state, strict=True)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ModelIntegrityError(
            f"the weights of {card.id!r} version {card.version} do not fit the network its "
            f"card describes: {error}"
        ) from None
    _check_bound(model, card)
    if model.normalization() != card.normalization:
        raise ModelIntegrityError(
            f"the card of {card.id!r} version {card.version} records the normalization "
            f"{card.normalization}, but its network applies {model.normalization()}"
        )
    return model


def read_verified_card(
    model_id: str, version: str | int | None = None, *, repository: str | Path | None = None
) -> ModelCard:
    """The card of ``model_id`` at ``version`` (latest by default) after checking that its
    weights file exists and has the card's SHA-256; no network is built.

    Raises as :func:`load` does, except for the checks that need the network (the weights
    fitting the architecture, the re-certified bound): a process that runs the model
    (:func:`load`) makes those.
    """
    package = _resolve(_root(repository), model_id, version)
    card = _read_card(package)
    _verified_weights(package / card.weights_file, card)
    return card


def _verified_weights(weights_path: Path, card: ModelCard) -> bytes:
    """The bytes of the weights file, refused unless they have the card's SHA-256."""
    if not weights_path.is_file():
        raise ModelIntegrityError(f"{weights_path} is missing")
    data = weights_path.read_bytes()
    digest = sha256_hex(data)
    if digest != card.sha256:
        raise ModelIntegrityError(
            f"refusing to load {card.id!r} version {card.version}: {weights_path} has SHA-256 "
            f"{digest} but its card records {card.sha256} (the weights were modified or "
            "corrupted)"
        )
    return data


def _check_bound(model: CertifiableModel, card: ModelCard) -> None:
    bound = model.lipschitz_bound()
    if bound is None:
        if card.lipschitz_bound is not None:
            raise ModelIntegrityError(
                f"the card of {card.id!r} records a Lipschitz bound but {card.architecture} "
                "has none"
            )
        return
    bound = float(bound)
    if card.lipschitz_bound is None or not bound <= card.lipschitz_bound:
        raise ModelIntegrityError(
            f"refusing to load {card.id!r} version {card.version}: the loaded weights have a "
            f"certified Lipschitz bound {bound}, above the card's {card.lipschitz_bound}"
        )


def _ceil_to_decimals(value: float, decimals: int) -> float:
    """A float ≥ ``value`` with at most ``decimals`` decimal places (up to one ulp more)."""
    rounded = float(Decimal(value).quantize(Decimal(1).scaleb(-decimals), ROUND_CEILING))
    return rounded if rounded >= value else math.nextafter(rounded, math.inf)


def _json_tree(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists), so a card equals its reloaded self."""
    return json.loads(json.dumps(value))


def save_model(
    model: CertifiableModel,
    *,
    model_id: str,
    class_names: Sequence[str],
    sigma: float,
    dataset: DatasetRecord,
    training: TrainingRecord,
    metrics: Mapping[str, Any],
    intended_input: IntendedInput | None = None,
    repository: str | Path | None = None,
    version: str | int | None = None,
) -> ModelCard:
    """Write ``model`` as a new package ``<repository>/<model_id>/<version>/`` and return its card.

    ``version`` defaults to one more than the latest; an existing version is never overwritten.
    Architecture, config, input shape, normalisation and the certified bound are read from the
    model itself (``model.describe()``); ``intended_input`` says what inputs the model was made
    for (its channel count must be the model's). The package appears atomically (written aside, then
    renamed into place).
    """
    # Here, not at the top: importing the models package loads no dataset library.

    check_model_id(model_id)
    root = _root(repository)
    existing = _versions(root, model_id)
    new_version = str(int(existing[-1]) + 1 if existing else 1) if version is None else str(version)
    if not _VERSION.fullmatch(new_version):
        raise ValueError(f"a version is a positive integer, got {new_version!r}")
    target = package_directory(model_id, new_version, repository=root)
    if target.exists():
        raise ValueError(f"{target} exists; versions are never overwritten")
    summary = model.describe()
    if len(class_names) != summary["num_classes"]:
        raise ValueError(
            f"{len(class_names)} class names for a model with {summary['num_classes']} classes"
        )
    bound = summary["lipschitz_bound"]
    state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    weights = save_safetensors(state, metadata={"model_id": model_id, "version": new_version})
    input_shape = tuple(int(d) for d in summary["input_shape"])
    if intended_input is not None and intended_input.channels != input_shape[0]:
        raise ValueError(
            f"the intended input has {intended_input.channels} channel(s), the model takes "
            f"{input_shape[0]}"
        )
    card = ModelCard(
        id=model_id,
        version=new_version,
        architecture=summary["architecture"],
        config=_json_tree(summary["config"]),
        input_shape=input_shape,  # type: ignore[arg-type]
        channel_order=CHANNEL_ORDERS[input_shape[0]],
        class_names=tuple(str(c) for c in class_names),
        sigma=float(sigma),
        normalization=model.normalization(),
        lipschitz_bound=None if bound is None else _ceil_to_decimals(float(bound), BOUND_DECIMALS),
        dataset=dataset,
        training=training,
        metrics=_json_tree(dict(metrics)),
        sha256=sha256_hex(weights),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        package_version=package_version(),
        intended_input=intended_input,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{new_version}.", dir=target.parent))
    try:
        (staging / WEIGHTS_FILE).write_bytes(weights)
        (staging / CARD_FILE).write_text(card.to_json(), encoding="utf-8")
        staging.chmod(0o755)  # mkdtemp makes it private; a package is for every reader
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return card
