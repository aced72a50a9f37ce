"""The repository through fsspec: a local folder and fsspec's in-memory file system (an object
store's semantics: no folders, no rename), publishing, retiring and the verified local mirror."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

import models
from models.package_store import PackageMirror, PackageStore, VersionExistsError
from models.repository import CARD_FILE, WEIGHTS_FILE, ModelCard, ModelIntegrityError
from tests.models.packages import package_files, save_package


@pytest.fixture(params=["folder", "memory"])
def store(request, tmp_path: Path) -> PackageStore:
    if request.param == "folder":
        return PackageStore(tmp_path / "repository")
    return PackageStore(f"memory://hycas-test-{uuid.uuid4().hex}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, bytes]:
    return package_files(save_package(tmp_path_factory.mktemp("packages")))


def card_of(files: dict[str, bytes]) -> ModelCard:
    return ModelCard.from_dict(json.loads(files[CARD_FILE]))


def test_a_published_version_is_listed_read_and_never_overwritten(store, tiny):
    assert store.model_ids() == [] and store.versions("tiny") == []
    card = card_of(tiny)
    store.publish(card, tiny[WEIGHTS_FILE])
    assert store.model_ids() == ["tiny"] and store.versions("tiny") == ["1"]
    assert store.read_card("tiny", "1") == card
    assert store.read("tiny", "1", WEIGHTS_FILE) == tiny[WEIGHTS_FILE]
    with pytest.raises(VersionExistsError, match="never overwritten"):
        store.publish(card, b"other weights")
    assert store.read("tiny", "1", WEIGHTS_FILE) == tiny[WEIGHTS_FILE]


def test_retiring_keeps_the_files_and_records_who(store, tiny):
    store.publish(card_of(tiny), tiny[WEIGHTS_FILE])
    record = store.retire("tiny", "1", by="0123abcd")
    assert record.retired_by == "0123abcd"
    assert store.retired("tiny") == {"1": record}
    assert store.versions("tiny") == ["1"]  # queued jobs still find it
    assert store.retire("tiny", "1", by="someone else") == record  # retiring again: no change
    with pytest.raises(LookupError, match="no version '2'"):
        store.retire("tiny", "2", by="x")


def test_the_mirror_copies_a_verified_package_that_models_load_reads(store, tiny, tmp_path):
    store.publish(card_of(tiny), tiny[WEIGHTS_FILE])
    mirror = PackageMirror(store, tmp_path / "cache")
    local = mirror.fetch("tiny", "1")
    model, card = models.load("tiny", "1", repository=mirror.root)
    assert local == mirror.root / "tiny" / "1" and card == card_of(tiny)
    assert model.lipschitz_bound() <= card.lipschitz_bound
    assert mirror.fetch("tiny", "1") == local  # kept: the card did not change


def test_the_mirror_refuses_weights_that_do_not_match_their_card(tmp_path, tiny):
    store = PackageStore(f"memory://hycas-test-{uuid.uuid4().hex}")
    card = card_of(tiny)
    store.publish(card, tiny[WEIGHTS_FILE])
    tampered = bytearray(tiny[WEIGHTS_FILE])
    tampered[-1] ^= 1
    store.fs.pipe_file(f"{store.root}/tiny/1/{WEIGHTS_FILE}", bytes(tampered))
    mirror = PackageMirror(store, tmp_path / "cache")
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        mirror.fetch("tiny", "1")
    assert not (mirror.root / "tiny" / "1").exists()
