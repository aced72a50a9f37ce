"""Models loaded once per process, from the model repository (:mod:`models`, issue 4).

Only :class:`RepositorySource` talks to the repository; everything else sees a
:class:`ModelSource` and the :class:`LoadedModel` it gives.

CUDA: a model is moved to its device on first use inside the process that runs it, never at
import time, so a Celery prefork parent never initialises CUDA before it forks its children;
a cache that finds itself in a forked child (another PID) starts empty.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from workers import metrics

logger = logging.getLogger(__name__)


class UnknownModelError(LookupError):
    """The repository has no such model or version; the message lists what exists."""


MODEL_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")
"""What a model id may be; anything else is refused before the repository is searched."""


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference with what the certifier and the API need from its card."""

    model: torch.nn.Module
    model_id: str
    version: str
    sha256: str
    """SHA-256 of the weights file, checked by the repository on load."""
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    sigmas: tuple[float, ...]
    """The smoothing noise levels the model was trained for (the card's training sigma)."""
    lipschitz_bound: float
    card: dict[str, Any]
    device: str
    load_seconds: float

    def class_name(self, label: int | None) -> str | None:
        return None if label is None else self.class_names[label]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when it is available (checked in the calling process), else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class ModelSource(Protocol):
    """Where models come from: the repository, or any source of (model, card) packages."""

    def load(self, model_id: str, version: str | None) -> LoadedModel: ...

    def model_ids(self) -> list[str]: ...


class RepositorySource:
    """The model repository of :mod:`models` (issue 4): ``models.load`` checks the weights."""

    def __init__(self, repository: Path | None) -> None:
        self.repository = repository

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
            model, card = models.load(model_id, version=version, repository=self.repository)
        except (KeyError, LookupError, FileNotFoundError) as error:
            if model_id not in self.model_ids():
                # The repository's own message names its folder: not for API clients.
                raise UnknownModelError(
                    f"no model {model_id!r}; the repository holds {self.model_ids()}"
                ) from error
            raise UnknownModelError(str(error)) from error
        return describe_package(model, card, time.perf_counter() - started)

    def model_ids(self) -> list[str]:
        import models

        return sorted(models.list_models(repository=self.repository))


def describe_package(model: torch.nn.Module, card: Any, load_seconds: float) -> LoadedModel:
    """A :class:`LoadedModel` from a repository package (the card's fields are read here)."""
    card_dict = card.to_dict()
    return LoadedModel(
        model=model,
        model_id=str(card_dict["id"]),
        version=str(card_dict["version"]),
        sha256=str(card_dict["sha256"]),
        input_shape=tuple(int(d) for d in model.input_shape),  # type: ignore[arg-type]
        class_names=tuple(str(name) for name in card_dict["class_names"]),
        sigmas=(float(card_dict["sigma"]),),
        lipschitz_bound=float(model.lipschitz_bound()),
        card=card_dict,
        device="cpu",
        load_seconds=load_seconds,
    )


class ModelCache:
    """Loads each (model, version) once per process and keeps it; thread-safe."""

    def __init__(self, source: ModelSource, device: str = "auto") -> None:
        self.source = source
        self.device_name = device
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._models: dict[tuple[str, str | None], LoadedModel] = {}

    def get(self, model_id: str, version: str | None = None) -> LoadedModel:
        """The model ``model_id`` at ``version`` (the latest when ``None``), loaded on demand."""
        key = (model_id, version)
        with self._lock:
            if self._pid != os.getpid():
                self._models.clear()
                self._pid = os.getpid()
            loaded = self._models.get(key)
            if loaded is None:
                loaded = self._load(model_id, version)
                self._models[key] = loaded
                self._models[(model_id, loaded.version)] = loaded
            return loaded

    def model_ids(self) -> list[str]:
        return self.source.model_ids()

    def loaded(self) -> Sequence[LoadedModel]:
        with self._lock:
            return list({id(m): m for m in self._models.values()}.values())

    def _load(self, model_id: str, version: str | None) -> LoadedModel:
        package = self.source.load(model_id, version)
        device = resolve_device(self.device_name)
        loaded = dataclasses.replace(
            package, model=package.model.to(device).eval(), device=str(device)
        )
        metrics.MODELS_LOADED.labels(model=loaded.model_id, version=loaded.version).set(1)
        logger.info(
            "event=model_loaded model=%s version=%s device=%s seconds=%.3f",
            loaded.model_id,
            loaded.version,
            loaded.device,
            loaded.load_seconds,
        )
        return loaded
