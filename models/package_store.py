"""The model repository wherever fsspec reaches it: a local folder or an object store's URL.

``HYCAS_MODEL_REPOSITORY`` is a folder (``/srv/models``) or a URL (``s3://bucket/models``,
``gs://…``, ``az://…``, ``memory://…``; the object-store backends are the optional extras
``hycas-certify[s3]``, ``[gcs]`` and ``[azure]``). The layout is the one of
:mod:`models.repository`: ``<model id>/<version>/model.json`` beside its weights. A version
exists once its card does: :meth:`PackageStore.publish` writes the weights first and the card
last (a folder is renamed into place on a local disk), so a reader never sees a card whose
weights are still on their way. A retired version keeps its files and gains
``retired.json`` (who retired it and when): jobs already queued for it still run, new
requests for it are refused by the gateway.

Networks are built from local files only: :class:`PackageMirror` copies a package of a remote
store into a local folder after checking its weights' SHA-256 against its card, and keeps it
there while the card's SHA-256 stays the same (versions are immutable), so each worker
downloads a version once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from models.card import ModelCard
from models.repository import (
    CARD_FILE,
    ModelIntegrityError,
    UnknownModelError,
    check_model_id,
    default_repository,
    is_version,
    sha256_hex,
)

RETIRED_FILE = "retired.json"


class VersionExistsError(ValueError):
    """The version is already in the repository; versions are never overwritten."""


@dataclass(frozen=True)
class Retirement:
    """When a version was retired and by whom (an API key's SHA-256 prefix or a user name)."""

    retired_at: str
    retired_by: str

    @classmethod
    def from_json(cls, text: str | bytes) -> Retirement:
        data = json.loads(text)
        return cls(retired_at=str(data["retired_at"]), retired_by=str(data["retired_by"]))


class PackageStore:
    """A model repository at ``location`` (a folder or an fsspec URL; default
    ``$HYCAS_MODEL_REPOSITORY``, else the shipped one): list, read, publish, retire."""

    def __init__(self, location: str | Path | None = None) -> None:
        self.location = str(location if location is not None else default_repository())
        # A file system of its own: fsspec would otherwise share one per URL and options, even
        # across credentials or endpoints changed in the environment.
        self.fs, self.root = fsspec.core.url_to_fs(self.location, skip_instance_cache=True)
        self.root = self.root.rstrip("/")

    @property
    def is_local(self) -> bool:
        """Whether the repository is a folder of this machine (read in place, no mirror)."""
        return isinstance(self.fs, LocalFileSystem)

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _folders(self, path: str) -> list[str]:
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        return sorted(
            entry["name"].rstrip("/").rsplit("/", 1)[-1]
            for entry in entries
            if entry["type"] == "directory"
        )

    def refresh(self) -> None:
        """Forget listings the file system cached: an object store is listed afresh."""
        self.fs.invalidate_cache()

    def model_ids(self) -> list[str]:
        """The models with at least one version (sorted)."""
        self.refresh()
        return [m for m in self._folders(self.root) if _is_model_id(m) and self._version_names(m)]

    def _version_names(self, model_id: str) -> list[str]:
        found = [
            v
            for v in self._folders(self._path(model_id))
            if is_version(v) and self.fs.exists(self._path(model_id, v, CARD_FILE))
        ]
        return sorted(found, key=int)

    def versions(self, model_id: str) -> list[str]:
        """Every version of ``model_id`` that has a card, retired ones included, oldest first."""
        if not _is_model_id(model_id):
            return []
        self.refresh()
        return self._version_names(model_id)

    def retired(self, model_id: str) -> dict[str, Retirement]:
        """The retired versions of ``model_id`` and their retirement records."""
        if not _is_model_id(model_id):
            return {}
        self.refresh()
        records = {}
        for version in self._version_names(model_id):
            path = self._path(model_id, version, RETIRED_FILE)
            if self.fs.exists(path):
                records[version] = Retirement.from_json(self.fs.cat_file(path))
        return records

    def read(self, model_id: str, version: str, name: str) -> bytes:
        """The bytes of one file of a package."""
        check_model_id(model_id)
        try:
            return self.fs.cat_file(self._path(model_id, str(version), name))
        except FileNotFoundError:
            raise UnknownModelError(f"model {model_id!r} version {version} has no {name}") from None

    def read_card(self, model_id: str, version: str) -> ModelCard:
        try:
            return ModelCard.from_dict(json.loads(self.read(model_id, version, CARD_FILE)))
        except ValueError as error:
            raise ModelIntegrityError(
                f"the card of {model_id!r} version {version} is invalid: {error}"
            ) from None

    def publish(self, card: ModelCard, weights: bytes) -> None:
        """Add the package ``card`` + ``weights`` as ``<card.id>/<card.version>``; raises
        :class:`VersionExistsError` when that version exists. The card is written last."""
        check_model_id(card.id)
        folder = self._path(card.id, card.version)
        if self.fs.exists(self._path(card.id, card.version, CARD_FILE)):
            raise VersionExistsError(
                f"{card.id!r} version {card.version} exists; versions are never overwritten "
                "(push a new version number)"
            )
        files = {card.weights_file: weights, CARD_FILE: card.to_json().encode()}
        if self.is_local:
            _publish_local(Path(folder), files)
            return
        for name, data in files.items():
            self.fs.pipe_file(f"{folder}/{name}", data)

    def retire(self, model_id: str, version: str, *, by: str) -> Retirement:
        """Mark a version retired (its files stay); an already retired one keeps its record."""
        versions = self.versions(model_id)
        if not versions:
            raise UnknownModelError(f"no model {model_id!r}; the models are {self.model_ids()}")
        if str(version) not in versions:
            raise UnknownModelError(
                f"model {model_id!r} has no version {version!r}; its versions are {versions}"
            )
        path = self._path(model_id, str(version), RETIRED_FILE)
        if self.fs.exists(path):
            return Retirement.from_json(self.fs.cat_file(path))
        record = Retirement(
            retired_at=datetime.now(UTC).isoformat(timespec="seconds"), retired_by=by
        )
        self.fs.pipe_file(path, json.dumps(record.__dict__).encode())
        return record


def _is_model_id(name: str) -> bool:
    try:
        check_model_id(name)
    except ValueError:
        return False
    return True


def _publish_local(target: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into a folder aside and rename it to ``target`` (atomic on one disk);
    the rename fails when another publisher won the race."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        staging.chmod(0o755)  # mkdtemp makes it private; a package is for every reader
        if target.exists() and not any(target.iterdir()):
            target.rmdir()  # an empty folder left behind holds no version
        staging.rename(target)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        if target.exists():
            name = f"{target.parent.name!r} version {target.name}"
            raise VersionExistsError(f"{name} exists; versions are never overwritten") from None
        raise error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class PackageMirror:
    """Verified local copies of a remote store's packages, in the repository layout, so that
    :func:`models.load` reads them from a local folder (``root``)."""

    def __init__(self, store: PackageStore, cache_dir: str | Path | None = None) -> None:
        self.store = store
        base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        # One folder per store: two repositories may hold the same ids.
        self.root = base / hashlib.sha256(store.location.encode()).hexdigest()[:16]

    def fetch(self, model_id: str, version: str) -> Path:
        """The local folder of ``model_id`` ``version`` (downloaded when missing or when its
        card differs from the store's); raises :class:`ModelIntegrityError` when the store's
        weights do not have its card's SHA-256."""
        card_bytes = self.store.read(model_id, version, CARD_FILE)
        card = self.store.read_card(model_id, version)
        local = self.root / check_model_id(model_id) / str(version)
        if (local / CARD_FILE).is_file() and (local / CARD_FILE).read_bytes() == card_bytes:
            weights = local / card.weights_file
            if weights.is_file() and sha256_hex(weights.read_bytes()) == card.sha256:
                return local
        weights = self.store.read(model_id, version, card.weights_file)
        digest = sha256_hex(weights)
        if digest != card.sha256:
            raise ModelIntegrityError(
                f"refusing {model_id!r} version {version}: its weights in the repository have "
                f"SHA-256 {digest} but its card records {card.sha256}"
            )
        staging = self.root / f".{model_id}.{version}.{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            (staging / card.weights_file).write_bytes(weights)
            (staging / CARD_FILE).write_bytes(card_bytes)
            local.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(local, ignore_errors=True)
            staging.rename(local)
        except OSError:
            # Another process of this host mirrored it meanwhile: theirs is as good.
            shutil.rmtree(staging, ignore_errors=True)
            if not (local / CARD_FILE).is_file():
                raise
        return local


def default_cache_dir() -> Path:
    """Where packages of a remote repository are mirrored when no folder is configured."""
    return Path(tempfile.gettempdir()) / "hycas-model-cache"
