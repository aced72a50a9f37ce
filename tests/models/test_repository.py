"""The model repository: packages round-trip, tampering is refused, lookups list what exists."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

import models
from models import (
    ModelCard,
    ModelIntegrityError,
    UnknownModelError,
    build_hycas,
    list_models,
    list_versions,
    load,
    read_card,
    save_model,
)
from models.baselines import build_plain_cnn
from tests.models.packages import DATASET, TRAINING


def tiny_hycas(seed: int = 0) -> models.HyCAS:
    torch.manual_seed(seed)
    return build_hycas((1, 8, 8), 3, width=4)


def save(model, repository, model_id="tiny", version=None) -> ModelCard:
    return save_model(
        model,
        model_id=model_id,
        class_names=[f"class {i}" for i in range(model.num_classes)],
        sigma=0.25,
        dataset=DATASET,
        training=TRAINING,
        metrics={"clean_accuracy": 0.5},
        repository=repository,
        version=version,
    )


def rewrite_weights(package, change) -> None:
    """Apply ``change`` to the stored tensors and make the card's sha256 match again."""
    weights = package / "model.safetensors"
    state = load_safetensors(weights.read_bytes())
    change(state)
    data = save_safetensors(state)
    weights.write_bytes(data)
    card = json.loads((package / "model.json").read_text())
    card["sha256"] = models.repository.sha256_hex(data)
    (package / "model.json").write_text(json.dumps(card))


def test_card_round_trips_through_json_and_disk(tmp_path):
    card = save(tiny_hycas(), tmp_path)
    assert ModelCard.from_dict(json.loads(card.to_json())) == card
    assert read_card("tiny", repository=tmp_path) == card
    on_disk = json.loads((tmp_path / "tiny" / "1" / "model.json").read_text())
    assert on_disk["sha256"] == models.repository.sha256_hex(
        (tmp_path / "tiny" / "1" / "model.safetensors").read_bytes()
    )
    assert on_disk["input_shape"] == [1, 8, 8] and on_disk["channel_order"] == "L"
    assert on_disk["architecture"] == "hycas" and on_disk["config"]["width"] == 4
    assert (tmp_path / "tiny" / "1").stat().st_mode & 0o777 == 0o755


def test_card_with_unknown_or_missing_fields_is_refused():
    card = ModelCard.from_dict(json.loads(_sample_card_json()))
    data = card.to_dict()
    with pytest.raises(ValueError, match="unknown field"):
        ModelCard.from_dict({**data, "surprise": 1})
    del data["sha256"]
    with pytest.raises(ValueError, match="missing field"):
        ModelCard.from_dict(data)


def _sample_card_json() -> str:
    model = tiny_hycas()
    return ModelCard(
        id="tiny",
        version="1",
        architecture="hycas",
        config=model.config.to_dict(),
        input_shape=(1, 8, 8),
        channel_order="L",
        class_names=("a", "b", "c"),
        sigma=0.25,
        normalization=models.Normalization(mean=(0.5,), scale=(1.0,)),
        lipschitz_bound=2.0,
        dataset=DATASET,
        training=TRAINING,
        metrics={},
        sha256="0" * 64,
        created="2025-01-01T00:00:00+00:00",
        package_version="0",
    ).to_json()


def test_loaded_model_computes_what_was_saved(tmp_path):
    model = tiny_hycas()
    card = save(model, tmp_path)
    loaded, loaded_card = load("tiny", repository=tmp_path)
    assert loaded_card == card
    assert not loaded.training
    assert next(loaded.parameters()).device.type == "cpu"
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x, omega_seed=3), model.eval()(x, omega_seed=3))
    assert loaded.lipschitz_bound() <= card.lipschitz_bound <= 2.0


def test_loading_never_unpickles(tmp_path, monkeypatch):
    save(tiny_hycas(), tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle-based loading was used")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    model, _ = load("tiny", repository=tmp_path)
    assert model.num_classes == 3


def test_sha256_mismatch_is_refused(tmp_path):
    save(tiny_hycas(), tmp_path)
    weights = tmp_path / "tiny" / "1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        load("tiny", repository=tmp_path)


def test_inflated_random_projection_is_recertified_and_refused(tmp_path):
    save(tiny_hycas(), tmp_path)

    def inflate(state):
        key = next(k for k in state if k.endswith("branches.1.kernel"))
        state[key] = state[key] * 3.0

    rewrite_weights(tmp_path / "tiny" / "1", inflate)
    with pytest.raises(ModelIntegrityError, match="Lipschitz bound"):
        load("tiny", repository=tmp_path)


def test_card_bound_below_the_weights_bound_is_refused(tmp_path):
    save(tiny_hycas(), tmp_path)
    card_path = tmp_path / "tiny" / "1" / "model.json"
    card = json.loads(card_path.read_text())
    card["lipschitz_bound"] = 1.0
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelIntegrityError, match="above the card"):
        load("tiny", repository=tmp_path)


def test_weights_that_do_not_fit_the_card_are_refused(tmp_path):
    save(tiny_hycas(), tmp_path)
    rewrite_weights(tmp_path / "tiny" / "1", lambda state: state.pop("body.layers.head.bias"))
    with pytest.raises(ModelIntegrityError, match="do not fit"):
        load("tiny", repository=tmp_path)


def test_unknown_id_and_version_errors_list_what_exists(tmp_path):
    save(tiny_hycas(), tmp_path)
    save(tiny_hycas(), tmp_path, model_id="other")
    with pytest.raises(UnknownModelError, match=r"\['other', 'tiny'\]"):
        load("absent", repository=tmp_path)
    with pytest.raises(UnknownModelError, match=r"versions are \['1'\]"):
        load("tiny", 7, repository=tmp_path)
    with pytest.raises(ValueError, match="not valid"):
        load("../tiny", repository=tmp_path)


def test_latest_version_is_the_default_and_versions_are_never_overwritten(tmp_path):
    first = save(tiny_hycas(0), tmp_path)
    second = save(tiny_hycas(1), tmp_path)
    assert (first.version, second.version) == ("1", "2")
    assert load("tiny", repository=tmp_path)[1].sha256 == second.sha256
    assert load("tiny", "1", repository=tmp_path)[1].sha256 == first.sha256
    assert [c.version for c in list_versions("tiny", repository=tmp_path)] == ["1", "2"]
    assert list_models(tmp_path)["tiny"].version == "2"
    with pytest.raises(ValueError, match="never overwritten"):
        save(tiny_hycas(), tmp_path, version=2)


def test_repository_location_comes_from_the_environment(tmp_path, monkeypatch):
    save(tiny_hycas(), tmp_path)
    monkeypatch.setenv(models.MODEL_REPOSITORY_ENV, str(tmp_path))
    assert list(list_models()) == ["tiny"]
    monkeypatch.delenv(models.MODEL_REPOSITORY_ENV)
    assert models.default_repository() == models.repository.SHIPPED_REPOSITORY


def test_a_model_without_a_bound_round_trips(tmp_path):
    torch.manual_seed(0)
    cnn = build_plain_cnn((3, 8, 8), 2, width=4, hidden=8)
    card = save(cnn, tmp_path, model_id="cnn")
    assert card.lipschitz_bound is None and card.architecture == "cnn"
    assert card.channel_order == "RGB"
    loaded, _ = load("cnn", repository=tmp_path)
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), cnn.eval()(x))
