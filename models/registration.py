"""Registering a package in a repository: every check a load makes, before anything is stored.

A package is its card (``model.json``) and the weights file the card names, given as files,
as a folder or as one ``.tar``/``.tar.gz``/``.zip`` archive of them. :func:`register_package`
refuses (:class:`PackageRefused`) a card that does not parse or names an invalid id or
version, weights whose SHA-256 differ from the card's, weights that do not build the network
the card describes (architecture, config, strict state dict), and a card whose Lipschitz bound
is below the one recomputed from the weights (:func:`models.repository.build_checked_model`),
then publishes it (:meth:`models.package_store.PackageStore.publish`), which refuses an
existing version (:class:`models.package_store.VersionExistsError`). A refused package leaves
nothing in the repository.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from models.card import ModelCard
from models.package_store import PackageStore
from models.repository import (
    CARD_FILE,
    ModelIntegrityError,
    build_checked_model,
    check_model_id,
    is_version,
    sha256_hex,
)

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


class PackageRefused(ValueError):
    """The package cannot be registered; the message says which check it failed."""


@dataclass(frozen=True)
class CheckedPackage:
    """A package that passed every check: its card, the weights' bytes and the bound the
    weights were re-certified at (``None`` for a network without one)."""

    card: ModelCard
    weights: bytes
    recomputed_bound: float | None


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def files_from_archive(data: bytes, name: str, max_bytes: int) -> dict[str, bytes]:
    """The regular files of a ``.tar``/``.tar.gz``/``.zip`` archive by file name (folders in
    the archive are ignored); refused past ``max_bytes`` unpacked, or with two files of one
    name."""
    files: dict[str, bytes] = {}
    total = 0

    def add(member: str, size: int, read: Callable[[], bytes]) -> None:
        nonlocal total
        total += size
        if total > max_bytes:
            raise PackageRefused(f"{name} unpacks to more than {max_bytes:,} bytes")
        base = PurePosixPath(member).name
        if base in files:
            raise PackageRefused(f"{name} holds two files named {base!r}")
        files[base] = read()

    try:
        if name.lower().endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for info in archive.infolist():
                    if not info.is_dir():
                        add(info.filename, info.file_size, lambda i=info: archive.read(i))
        else:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
                for member in archive.getmembers():
                    if member.isfile():
                        extracted = archive.extractfile(member)
                        add(member.name, member.size, extracted.read)  # type: ignore[union-attr]
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as error:
        raise PackageRefused(f"{name} is not a readable archive: {error}") from None
    return files


def files_from_path(path: str | Path, max_bytes: int) -> dict[str, bytes]:
    """The files of a package folder (``model.json`` and its weights), or of an archive."""
    path = Path(path)
    if path.is_dir():
        card = path / CARD_FILE
        if not card.is_file():
            raise PackageRefused(f"{path} has no {CARD_FILE}: it is not a package folder")
        weights = _card_of({CARD_FILE: card.read_bytes()}).weights_file
        return {
            CARD_FILE: card.read_bytes(),
            **({weights: (path / weights).read_bytes()} if (path / weights).is_file() else {}),
        }
    if path.is_file() and is_archive(path.name):
        return files_from_archive(path.read_bytes(), path.name, max_bytes)
    raise PackageRefused(
        f"{path} is neither a package folder nor a {', '.join(ARCHIVE_SUFFIXES)} archive"
    )


def _card_of(files: Mapping[str, bytes]) -> ModelCard:
    if CARD_FILE not in files:
        raise PackageRefused(f"the package has no {CARD_FILE} (it has {sorted(files)})")
    try:
        card = ModelCard.from_dict(json.loads(files[CARD_FILE]))
    except (ValueError, TypeError) as error:
        raise PackageRefused(f"{CARD_FILE} is not a valid model card: {error}") from None
    try:
        check_model_id(card.id)
    except ValueError as error:
        raise PackageRefused(str(error)) from None
    if not is_version(card.version):
        raise PackageRefused(f"a version is a positive integer, the card says {card.version!r}")
    if PurePosixPath(card.weights_file).name != card.weights_file or card.weights_file in (
        "",
        CARD_FILE,
    ):
        raise PackageRefused(f"weights_file must be a file name, got {card.weights_file!r}")
    return card


def check_package(files: Mapping[str, bytes]) -> CheckedPackage:
    """The package made of ``files`` after every check a load makes; :class:`PackageRefused`
    (with the check that failed) otherwise."""
    card = _card_of(files)
    unknown = sorted(set(files) - {CARD_FILE, card.weights_file})
    if unknown:
        raise PackageRefused(
            f"the package holds {unknown} besides {CARD_FILE} and {card.weights_file}"
        )
    if card.weights_file not in files:
        raise PackageRefused(f"the package has no {card.weights_file} (its card names it)")
    weights = files[card.weights_file]
    digest = sha256_hex(weights)
    if digest != card.sha256:
        raise PackageRefused(
            f"{card.weights_file} has SHA-256 {digest} but the card records {card.sha256}"
        )
    try:
        model = build_checked_model(card, weights, card.weights_file)
    except ModelIntegrityError as error:
        raise PackageRefused(str(error)) from None
    bound = model.lipschitz_bound()
    return CheckedPackage(card, weights, None if bound is None else float(bound))


def register_package(store: PackageStore, files: Mapping[str, bytes]) -> CheckedPackage:
    """Check the package and add it to ``store``; raises :class:`PackageRefused` or
    :class:`models.package_store.VersionExistsError`, storing nothing in either case."""
    checked = check_package(files)
    store.publish(checked.card, checked.weights)
    return checked
