"""Changing the models of a running deployment: register and retire versions (admin keys).

Both act on the shared repository (:class:`models.package_store.PackageStore` at
``HYCAS_MODEL_REPOSITORY``), which every gateway and worker reads: a registered version is
used by the workers without a restart (they list the repository again when a job names a
version they do not know, and every ``HYCAS_MODEL_REFRESH_SECONDS``), a retired one is refused
to new requests (404) while the jobs already queued for it finish. Every change, accepted or
refused, is logged with who asked (the SHA-256 prefix of the admin key), what and the weights'
SHA-256, and counted in ``hycas_model_changes_total``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from models.package_store import PackageStore, Retirement, VersionExistsError
from models.registration import CheckedPackage, PackageRefused, register_package
from models.repository import ModelIntegrityError, UnknownModelError, sha256_hex
from service.errors import Conflict, Forbidden, InvalidPackage, UnknownModel
from service.metrics import MODEL_CHANGES
from workers.model_cache import ModelCache

logger = logging.getLogger("service.models")

ACTOR_CHARS = 12
"""How much of an admin key's SHA-256 a log line shows: enough to tell keys apart."""


class ModelRegistry:
    """Registration and retirement in ``store``; ``None``: this deployment serves a repository
    it does not own (the one shipped with the code, or models given by the caller) and
    refuses changes."""

    def __init__(self, store: PackageStore | None, models: ModelCache) -> None:
        self.store = store
        self.models = models

    def _writable(self) -> PackageStore:
        if self.store is None:
            raise Forbidden(
                "this deployment has no model repository of its own: set "
                "HYCAS_MODEL_REPOSITORY to a folder or bucket to register models",
                code="repository_not_configured",
            )
        return self.store

    def register(self, files: Mapping[str, bytes], actor: str) -> CheckedPackage:
        """Check and store the package; 422 (``invalid_package``) when a check fails, 409
        when its version exists."""
        store = self._writable()
        who = actor[:ACTOR_CHARS]
        try:
            checked = register_package(store, files)
        except PackageRefused as error:
            MODEL_CHANGES.labels(action="register", outcome="refused").inc()
            digests = {name: sha256_hex(data) for name, data in files.items()}
            logger.warning(
                "event=model_refused actor=%s files=%s reason=%r", who, digests, str(error)
            )
            raise InvalidPackage(f"the package was not registered: {error}") from None
        except VersionExistsError as error:
            MODEL_CHANGES.labels(action="register", outcome="conflict").inc()
            logger.warning("event=model_conflict actor=%s reason=%r", who, str(error))
            raise Conflict(str(error), code="version_exists") from None
        card = checked.card
        self.models.forget_listing(card.id)
        MODEL_CHANGES.labels(action="register", outcome="accepted").inc()
        logger.info(
            "event=model_registered actor=%s model=%s version=%s sha256=%s architecture=%s "
            "lipschitz_bound=%s",
            who,
            card.id,
            card.version,
            card.sha256,
            card.architecture,
            checked.recomputed_bound,
        )
        return checked

    def retire(self, model_id: str, version: str, actor: str) -> Retirement:
        """Mark the version retired: new requests for it get 404, queued jobs finish."""
        store = self._writable()
        who = actor[:ACTOR_CHARS]
        try:
            record = store.retire(model_id, version, by=who)
        except (UnknownModelError, ValueError) as error:
            raise UnknownModel(str(error)) from None
        try:
            sha256 = store.read_card(model_id, version).sha256
        except ModelIntegrityError:
            sha256 = "unreadable-card"
        self.models.forget_listing(model_id)
        MODEL_CHANGES.labels(action="retire", outcome="accepted").inc()
        logger.info(
            "event=model_retired actor=%s model=%s version=%s sha256=%s",
            who,
            model_id,
            version,
            sha256,
        )
        return record
