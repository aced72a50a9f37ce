"""Registration refuses every package a load would refuse, before anything is stored: a card
that understates the network's Lipschitz bound (a margin radius would be overstated), weights
that are not the card's, a config that does not build; versions are immutable."""

from __future__ import annotations

import io
import tarfile
import uuid
import zipfile
from pathlib import Path

import pytest

import models
from models.package_store import PackageStore, VersionExistsError
from models.registration import (
    PackageRefused,
    check_package,
    files_from_archive,
    files_from_path,
    register_package,
)
from models.repository import CARD_FILE, WEIGHTS_FILE
from tests.models.packages import package_files, save_package, with_card


@pytest.fixture(scope="module")
def hycas(tmp_path_factory) -> dict[str, bytes]:
    return package_files(save_package(tmp_path_factory.mktemp("packages")))


@pytest.fixture
def store() -> PackageStore:
    return PackageStore(f"memory://hycas-test-{uuid.uuid4().hex}")


def test_a_valid_package_is_checked_and_stored_with_its_recomputed_bound(store, hycas):
    checked = register_package(store, hycas)
    assert checked.recomputed_bound is not None
    assert checked.recomputed_bound <= checked.card.lipschitz_bound
    assert store.versions("tiny") == ["1"]
    with pytest.raises(VersionExistsError):
        register_package(store, hycas)


def test_a_card_claiming_a_smaller_bound_than_the_network_has_is_refused(store, hycas):
    """The soundness check of registration: a margin radius (z1 − z2) / (√2 L) computed with an
    understated L would overstate the radius."""
    bound = check_package(hycas).recomputed_bound
    understated = with_card(hycas, lipschitz_bound=bound * 0.999)
    with pytest.raises(PackageRefused, match="above the card's"):
        register_package(store, understated)
    with pytest.raises(PackageRefused, match="above the card's"):
        register_package(store, with_card(hycas, lipschitz_bound=None))
    assert store.model_ids() == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "0" * 64}, "SHA-256"),
        ({"config": {"width": 4, "no_such_option": 1}}, "do not fit"),
        ({"config": {"width": 8, "stage_depths": [1]}}, "do not fit"),
        ({"architecture": "transformer"}, "unknown architecture"),
        ({"version": "01"}, "positive integer"),
        ({"id": "Bad Id"}, "not valid"),
        ({"weights_file": "../model.safetensors"}, "file name"),
    ],
)
def test_a_package_failing_a_check_is_refused_and_nothing_is_stored(store, hycas, change, message):
    with pytest.raises(PackageRefused, match=message):
        register_package(store, with_card(hycas, **change))
    assert store.model_ids() == []


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sigma": NAN}, "sigma must be a finite number above 0"),
        ({"sigma": INF}, "sigma must be a finite number above 0"),
        ({"sigma": 0}, "sigma must be a finite number above 0"),
        ({"sigma": -1}, "sigma must be a finite number above 0"),
        ({"sigma": "0.25"}, "sigma must be a number"),
        ({"lipschitz_bound": INF}, "lipschitz_bound must be finite"),
        ({"lipschitz_bound": True}, "lipschitz_bound must be a number"),
        ({"input_shape": [1.5, 8, 8]}, "three integers"),
        ({"input_shape": [1, 8]}, "three integers"),
        ({"input_shape": [2, 8, 8]}, "1 \\(L\\) or 3 \\(RGB\\)"),
        ({"channel_order": "X"}, "channel_order must be 'L'"),
        ({"channel_order": "RGB"}, "channel_order must be 'L'"),
        ({"class_names": ["zero"]}, "two or more classes"),
        ({"class_names": ["zero", "one", "one"]}, "each once"),
        ({"normalization": {"mean": [NAN], "scale": [1.0]}}, "mean must hold 1 finite"),
        ({"normalization": {"mean": [0.5, 0.5], "scale": [1.0]}}, "mean must hold 1 finite"),
        ({"normalization": {"mean": [0.5], "scale": [0.0]}}, "scale must be above 0"),
        ({"normalization": {"mean": ["a"], "scale": [1.0]}}, "list of numbers"),
        ({"normalization": {"mean": [0.25], "scale": [1.0]}}, "its network applies"),
    ],
)
def test_a_card_with_values_no_model_can_have_is_refused(store, hycas, change, message):
    """A card with a NaN sigma would be listed as available and fail every request; one whose
    normalization is not its network's would mislead every reader of the card."""
    with pytest.raises(PackageRefused, match=message):
        register_package(store, with_card(hycas, **change))
    assert store.model_ids() == []


def test_missing_or_extra_files_are_refused(store, hycas):
    with pytest.raises(PackageRefused, match=r"no model\.safetensors"):
        register_package(store, {CARD_FILE: hycas[CARD_FILE]})
    with pytest.raises(PackageRefused, match=r"no model\.json"):
        register_package(store, {WEIGHTS_FILE: hycas[WEIGHTS_FILE]})
    with pytest.raises(PackageRefused, match="besides"):
        register_package(store, {**hycas, "notes.txt": b"x"})
    with pytest.raises(PackageRefused, match="not a valid model card"):
        register_package(store, {**hycas, CARD_FILE: b"{not json"})
    assert store.model_ids() == []


def test_a_package_travels_as_a_folder_a_tar_or_a_zip(tmp_path):
    folder = save_package(tmp_path / "repository")
    hycas = package_files(folder)
    tar_bytes, zip_bytes = io.BytesIO(), io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w:gz") as archive:
        archive.add(folder, arcname="tiny/1")
    with zipfile.ZipFile(zip_bytes, "w") as archive:
        for name, data in hycas.items():
            archive.writestr(f"tiny/1/{name}", data)
    assert files_from_path(folder, 10**8) == hycas
    assert files_from_archive(tar_bytes.getvalue(), "tiny.tar.gz", 10**8) == hycas
    assert files_from_archive(zip_bytes.getvalue(), "tiny.zip", 10**8) == hycas
    with pytest.raises(PackageRefused, match="unpacks to more than"):
        files_from_archive(zip_bytes.getvalue(), "tiny.zip", 1000)
    with pytest.raises(PackageRefused, match="not a readable archive"):
        files_from_archive(b"not an archive", "tiny.zip", 10**8)


def test_a_registered_local_package_loads_as_any_other(tmp_path, hycas):
    register_package(PackageStore(tmp_path), hycas)
    model, card = models.load("tiny", repository=tmp_path)
    assert card.sha256 == check_package(hycas).card.sha256
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == ["1"]  # no staging left behind
    assert isinstance(tmp_path, Path) and model.lipschitz_bound() <= card.lipschitz_bound
