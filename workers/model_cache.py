"""Models loaded once per process, from the model repository (:mod:`models`, issue 4).

Only :class:`RepositorySource` talks to the repository; everything else sees a
:class:`ModelSource` and the :class:`LoadedModel` it gives.

The repository is a folder or an object store's URL (:mod:`models.package_store`); packages
of a remote one are mirrored into a local folder after their SHA-256 was checked, once per
version. A retired version is still loaded for the jobs that name it; a model's default
version is its newest version that loads and is not retired.

A package that fails its integrity checks (weights that do not match the card's sha256, a
card that does not parse, a network that does not build) makes that version *unavailable*,
not the process broken: asking for it raises :class:`ModelUnavailableError` with the reason,
and a model's default version is its newest version that loads. The list of versions is read
again every ``refresh_seconds`` and whenever a version that is not listed is asked for, so
versions added to the repository are used without a restart.

CUDA: a model is moved to its device on first use inside the process that runs it, never at
import time, so a Celery prefork parent never initialises CUDA before it forks its children;
a cache that finds itself in a forked child (another PID) starts empty.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from models.devices import resolve_device
from models.repository import MODEL_ID_PATTERN, UnknownModelError
from workers import metrics

if TYPE_CHECKING:
    from models.package_store import Retirement
    from models.protocol import CertifiableModel

logger = logging.getLogger(__name__)


class ModelUnavailableError(ValueError):
    """A package that exists but cannot be used; the message gives the reason.

    A ``ValueError``, as any refusal to load a model is for the job runner."""


@dataclass(frozen=True)
class VersionStatus:
    """Whether one version of a model loads, and why not when it does not."""

    model_id: str
    version: str
    available: bool
    """Whether the version loads (its weights, network and bound check out)."""
    reason: str | None = None
    retired: bool = False
    """Whether an administrator retired it: it loads, but new requests are refused."""

    @property
    def status(self) -> Literal["available", "unavailable", "retired"]:
        """``unavailable`` when it does not load, else ``retired`` or ``available``."""
        if not self.available:
            return "unavailable"
        return "retired" if self.retired else "available"

    @property
    def serving(self) -> bool:
        """Whether new requests may use it."""
        return self.status == "available"


@dataclass(frozen=True)
class VersionDetail:
    """One version of a model as ``GET /v1/models/{id}`` lists it: whether it serves new
    requests, why not, and its card (``None`` when it does not load)."""

    model_id: str
    version: str
    status: Literal["available", "unavailable", "retired"]
    reason: str | None
    card: dict[str, Any] | None
    retirement: Retirement | None


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference with what the certifier and the API need from its card."""

    model: CertifiableModel | None
    """The network; ``None`` where only the card was read (:class:`RepositoryCardSource`)."""
    model_id: str
    version: str
    sha256: str
    """SHA-256 of the weights file, checked by the repository on load."""
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    sigmas: tuple[float, ...]
    """The smoothing noise levels the model was trained for (the card's training sigma)."""
    lipschitz_bound: float | None
    """The network's certified L2 bound; ``None`` for one certified by smoothing only."""
    card: dict[str, Any]
    device: str
    load_seconds: float

    def class_name(self, label: int | None) -> str | None:
        return None if label is None else self.class_names[label]


class ModelSource(Protocol):
    """Where models come from: the repository, or any source of (model, card) packages."""

    def load(self, model_id: str, version: str | None) -> LoadedModel:
        """The package; :class:`UnknownModelError` when it does not exist,
        :class:`ModelUnavailableError` when it exists but cannot be used."""
        ...

    def model_ids(self) -> list[str]: ...

    def versions(self, model_id: str) -> list[str]:
        """The versions of ``model_id``, retired ones included, oldest first; ``[]`` for an
        unknown model."""
        ...

    def retirements(self, model_id: str) -> Mapping[str, Retirement]:
        """The retired versions of ``model_id`` (refused to new requests) and their records."""
        ...


class RepositorySource:
    """The model repository of :mod:`models` at a folder or URL (``None``: the default one):
    ``models.load`` checks the weights, from the folder itself or from the local mirror of a
    remote repository (in ``cache_dir``, default :func:`models.package_store.default_cache_dir`)."""

    def __init__(self, repository: str | Path | None, cache_dir: Path | None = None) -> None:
        from models.package_store import PackageMirror, PackageStore

        self.store = PackageStore(repository)
        self.mirror = None if self.store.is_local else PackageMirror(self.store, cache_dir)

    def load(self, model_id: str, version: str | None) -> LoadedModel:
        import models

        if not MODEL_ID_PATTERN.fullmatch(model_id):
            shown = model_id if len(model_id) <= 80 else f"{model_id[:80]}…"
            raise UnknownModelError(
                f"{shown!r} is not a model id (lowercase letters, digits, '-' and '_', at most "
                f"128 characters); the repository holds {self.model_ids()}"
            )
        started = time.perf_counter()
        try:
            model, card = self._read_package(model_id, version)
        except (KeyError, LookupError, FileNotFoundError) as error:
            if model_id not in self.model_ids():
                # The repository's own message names its folder: not for API clients.
                raise UnknownModelError(
                    f"no model {model_id!r}; the repository holds {self.model_ids()}"
                ) from error
            raise UnknownModelError(str(error)) from error
        except models.ModelIntegrityError as error:
            raise ModelUnavailableError(self._without_root(str(error))) from None
        except OSError as error:
            raise ModelUnavailableError(
                f"{model_id!r} version {version}: the package cannot be read ({error.strerror})"
            ) from None
        return describe_package(model, card, time.perf_counter() - started)

    def _local_root(self, model_id: str, version: str | None) -> tuple[str, str]:
        """The local folder holding ``model_id`` at ``version`` (the latest when ``None``),
        mirrored first from a remote repository, and that version."""
        if version is None:
            versions = self.versions(model_id)
            if not versions:
                raise UnknownModelError(f"no model {model_id!r}")
            version = versions[-1]
        if self.mirror is None:
            return self.store.root, version
        self.mirror.fetch(model_id, version)
        return str(self.mirror.root), version

    def _read_package(self, model_id: str, version: str | None) -> tuple[Any, Any]:
        import models

        root, version = self._local_root(model_id, version)
        return models.load(model_id, version=version, repository=root)

    def model_ids(self) -> list[str]:
        return self.store.model_ids()

    def versions(self, model_id: str) -> list[str]:
        if not MODEL_ID_PATTERN.fullmatch(model_id):
            return []
        return self.store.versions(model_id)

    def retirements(self, model_id: str) -> Mapping[str, Retirement]:
        if not MODEL_ID_PATTERN.fullmatch(model_id):
            return {}
        return self.store.retired(model_id)

    def _without_root(self, message: str) -> str:
        """``message`` with the repository's folders left out: paths relative to them."""
        for root in (self.store.root, None if self.mirror is None else str(self.mirror.root)):
            if root is not None:
                message = message.replace(root.rstrip("/") + "/", "")
        return message


class RepositoryCardSource(RepositorySource):
    """The repository's cards, each after its weights' SHA-256 was checked, and no network:
    what the distributed gateway needs to list models, answer ``/readyz`` and validate
    requests. The checks that need the network (weights that fit it, its re-certified bound)
    are made by the workers, which load it with ``models.load``."""

    def _read_package(self, model_id: str, version: str | None) -> tuple[None, Any]:
        import models

        root, version = self._local_root(model_id, version)
        return None, models.read_verified_card(model_id, version, repository=root)


def describe_package(model: CertifiableModel | None, card: Any, load_seconds: float) -> LoadedModel:
    """A :class:`LoadedModel` from a repository package (the card's fields are read here);
    input shape and bound are the network's when there is one, else the card's."""
    card_dict = card.to_dict()
    if model is None:
        input_shape, bound = card_dict["input_shape"], card_dict["lipschitz_bound"]
    else:
        input_shape, bound = model.input_shape, model.lipschitz_bound()
    return LoadedModel(
        model=model,
        model_id=str(card_dict["id"]),
        version=str(card_dict["version"]),
        sha256=str(card_dict["sha256"]),
        input_shape=tuple(int(d) for d in input_shape),  # type: ignore[arg-type]
        class_names=tuple(str(name) for name in card_dict["class_names"]),
        sigmas=(float(card_dict["sigma"]),),
        lipschitz_bound=bound,
        card=card_dict,
        device="cpu",
        load_seconds=load_seconds,
    )


class ModelCache:
    """Loads each (model, version) once per process and keeps it; thread-safe.

    A version that loaded once is known good (packages are never overwritten); a version that
    failed is not tried again for ``refresh_seconds`` (a package still being copied in gets
    its next chance then). The versions of a model are listed again after ``refresh_seconds``
    and whenever a version not in the list is asked for.
    """

    def __init__(
        self, source: ModelSource, device: str = "auto", refresh_seconds: float = 10.0
    ) -> None:
        self.source = source
        self.device_name = device
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._verified: set[tuple[str, str]] = set()
        self._failures: dict[tuple[str, str], tuple[float, str]] = {}
        self._cards: dict[tuple[str, str], dict[str, Any]] = {}
        self._listings: dict[str, tuple[float, tuple[str, ...], Mapping[str, Retirement]]] = {}

    def get(self, model_id: str, version: str | None = None) -> LoadedModel:
        """The model ``model_id`` at ``version``, loaded on demand; ``None``: its newest
        version that loads.

        Raises :class:`UnknownModelError` for a model or version the repository does not have
        and :class:`ModelUnavailableError` (with the reason) for one that fails to load.
        """
        with self._lock:
            self._forget_if_forked()
            if version is None:
                return self._newest_available(model_id)
            versions = self._versions(model_id)
            if version not in versions:
                versions = self._versions(model_id, fresh=True)
            if version not in versions:
                raise self._unknown(model_id, version, versions)
            return self._load(model_id, version)

    def model_ids(self) -> list[str]:
        return self.source.model_ids()

    def is_retired(self, model_id: str, version: str) -> bool:
        """Whether ``version`` was retired (as of the last listing, at most
        ``refresh_seconds`` old); its jobs still run, new requests must not use it."""
        with self._lock:
            self._forget_if_forked()
            return version in self._retirements(model_id)

    def active_versions(self, model_id: str) -> list[str]:
        """The versions of ``model_id`` that are not retired, oldest first."""
        with self._lock:
            self._forget_if_forked()
            retired = self._retirements(model_id)
            return [v for v in self._versions(model_id) if v not in retired]

    def forget_listing(self, model_id: str) -> None:
        """List ``model_id`` again on its next use (after this process changed it)."""
        with self._lock:
            self._listings.pop(model_id, None)

    def version_details(self, model_id: str) -> list[VersionDetail]:
        """Every version of ``model_id``, oldest first, each checked (as
        :meth:`version_statuses` does) and described by its card; ``[]`` for an unknown
        model."""
        with self._lock:
            self._forget_if_forked()
            return [self._detail(model_id, v) for v in self._versions(model_id, fresh=True)]

    def version_detail(self, model_id: str, version: str) -> VersionDetail:
        """One version as :meth:`version_details` describes it."""
        with self._lock:
            self._forget_if_forked()
            versions = self._versions(model_id, fresh=True)
            if version not in versions:
                raise self._unknown(model_id, version, versions)
            return self._detail(model_id, version)

    def _detail(self, model_id: str, version: str) -> VersionDetail:
        reason = self._check(model_id, version)
        retirement = self._retirements(model_id).get(version)
        status = VersionStatus(model_id, version, reason is None, reason, retirement is not None)
        card = self._cards.get((model_id, version))
        return VersionDetail(model_id, version, status.status, reason, card, retirement)

    def loaded(self) -> Sequence[LoadedModel]:
        with self._lock:
            return list(self._models.values())

    def version_statuses(self) -> list[VersionStatus]:
        """Every version of every model, each loaded (or checked) to say whether it is usable.

        Default versions stay loaded (requests use them); older ones are checked once and not
        kept in memory.
        """
        statuses = []
        for model_id in self.model_ids():
            with self._lock:
                self._forget_if_forked()
                # Loads the default version to keep; each version's own reason is listed below.
                with contextlib.suppress(ModelUnavailableError, UnknownModelError):
                    self._newest_available(model_id)
                retired = self._retirements(model_id)
                for version in self._versions(model_id):
                    reason = self._check(model_id, version)
                    statuses.append(
                        VersionStatus(
                            model_id, version, reason is None, reason, retired=version in retired
                        )
                    )
        return statuses

    def _forget_if_forked(self) -> None:
        if self._pid != os.getpid():
            self._models.clear()
            self._verified.clear()
            self._failures.clear()
            self._cards.clear()
            self._listings.clear()
            self._pid = os.getpid()

    def _versions(self, model_id: str, *, fresh: bool = False) -> tuple[str, ...]:
        listed = self._listings.get(model_id)
        now = time.monotonic()
        if fresh or listed is None or now - listed[0] >= self.refresh_seconds:
            versions = tuple(self.source.versions(model_id))
            retired = self.source.retirements(model_id) if versions else {}
            listed = (now, versions, retired)
            self._listings[model_id] = listed
        return listed[1]

    def _retirements(self, model_id: str) -> Mapping[str, Retirement]:
        self._versions(model_id)
        return self._listings[model_id][2]

    def _unknown(self, model_id: str, version: str | None, versions: Sequence[str]) -> Exception:
        if not versions:
            shown = model_id if len(model_id) <= 80 else f"{model_id[:80]}…"
            return UnknownModelError(
                f"no model {shown!r}; the available models are {self.model_ids()}"
            )
        return UnknownModelError(
            f"model {model_id!r} has no version {version!r}; its versions are {list(versions)}"
        )

    def _newest_available(self, model_id: str) -> LoadedModel:
        versions = self._versions(model_id)
        if not versions:
            versions = self._versions(model_id, fresh=True)
        if not versions:
            raise self._unknown(model_id, None, versions)
        retired = self._retirements(model_id)
        if all(v in retired for v in versions):
            raise UnknownModelError(
                f"every version of {model_id!r} was retired ({', '.join(versions)}); none "
                "takes new requests"
            )
        reasons = []
        for version in reversed([v for v in versions if v not in retired]):
            try:
                return self._load(model_id, version)
            except ModelUnavailableError as error:
                reasons.append(str(error))
        raise ModelUnavailableError(f"no version of {model_id!r} can be used: {'; '.join(reasons)}")

    def _recent_failure(self, key: tuple[str, str]) -> str | None:
        failure = self._failures.get(key)
        if failure is None or time.monotonic() - failure[0] >= self.refresh_seconds:
            return None
        return failure[1]

    def _from_source(self, model_id: str, version: str) -> LoadedModel:
        """The package from the source; a failure is remembered and logged once."""
        key = (model_id, version)
        reason = self._recent_failure(key)
        if reason is not None:
            raise ModelUnavailableError(reason)
        try:
            package = self.source.load(model_id, version)
        except ModelUnavailableError as error:
            if self._failures.get(key, (0.0, None))[1] != str(error):
                logger.error(
                    "event=model_unavailable model=%s version=%s reason=%r",
                    model_id,
                    version,
                    str(error),
                )
            self._failures[key] = (time.monotonic(), str(error))
            raise
        self._failures.pop(key, None)
        self._verified.add(key)
        self._cards[key] = package.card
        return package

    def _check(self, model_id: str, version: str) -> str | None:
        """Why ``version`` cannot be used, or ``None`` when it loads."""
        key = (model_id, version)
        if key in self._models or key in self._verified:
            return None
        try:
            self._from_source(model_id, version)
        except (ModelUnavailableError, UnknownModelError) as error:
            return str(error)
        return None

    def _load(self, model_id: str, version: str) -> LoadedModel:
        key = (model_id, version)
        loaded = self._models.get(key)
        if loaded is not None:
            return loaded
        package = self._from_source(model_id, version)
        if package.model is None:  # a card: nothing to place on a device
            loaded = package
        else:
            device = resolve_device(self.device_name)
            loaded = dataclasses.replace(
                package, model=package.model.to(device).eval(), device=str(device)
            )
        self._models[key] = loaded
        metrics.MODELS_LOADED.labels(model=loaded.model_id, version=loaded.version).set(1)
        logger.info(
            "event=model_loaded model=%s version=%s device=%s seconds=%.3f",
            loaded.model_id,
            loaded.version,
            loaded.device,
            loaded.load_seconds,
        )
        return loaded
