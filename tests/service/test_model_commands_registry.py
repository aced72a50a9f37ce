"""``hycas models push PATH`` into a repository (no server) and ``hycas models import`` of an
ONNX classifier: the same checks as ``POST /v1/models``, one line a person can act on."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from torch import nn

from models.package_store import PackageStore
from service.cli import main
from tests.models.packages import save_package


def test_push_registers_a_folder_or_an_archive_and_refuses_an_existing_version(
    tmp_path: Path, capsys
):
    folder = save_package(tmp_path / "trained", version="3")
    repository = tmp_path / "repository"
    assert main(["models", "push", str(folder), "--repository", str(repository)]) == 0
    assert "registered tiny version 3" in capsys.readouterr().out
    assert PackageStore(repository).versions("tiny") == ["3"]
    assert main(["models", "push", str(folder), "--repository", str(repository)]) == 2
    assert "exists; versions are never overwritten" in capsys.readouterr().err

    archive = tmp_path / "tiny-4.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(save_package(tmp_path / "trained", version="4"), arcname="4")
    assert main(["models", "push", str(archive), "--repository", str(repository)]) == 0
    assert PackageStore(repository).versions("tiny") == ["3", "4"]


def test_push_refuses_a_package_whose_card_understates_the_bound(tmp_path: Path, capsys):
    folder = save_package(tmp_path / "trained")
    card = json.loads((folder / "model.json").read_text())
    card["lipschitz_bound"] = card["lipschitz_bound"] / 2
    (folder / "model.json").write_text(json.dumps(card))
    repository = tmp_path / "repository"
    assert main(["models", "push", str(folder), "--repository", str(repository)]) == 2
    assert "above the card's" in capsys.readouterr().err
    assert PackageStore(repository).model_ids() == []


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_import_wraps_an_onnx_classifier_and_refuses_a_bad_graph(tmp_path: Path, capsys):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    graph = io.BytesIO()
    torch.onnx.export(
        cnn,
        (torch.zeros(1, 1, 8, 8),),
        graph,
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
    )
    (tmp_path / "cnn.onnx").write_bytes(graph.getvalue())
    (tmp_path / "names.txt").write_text("benign\nmalignant\n")
    repository = tmp_path / "repository"
    command = ["models", "import", str(tmp_path / "cnn.onnx"), "--model-id", "lesions"]
    options = ["--classes", str(tmp_path / "names.txt"), "--sigma", "0.25"]
    options += ["--normalization", "0.5,0.25", "--repository", str(repository)]
    assert main([*command, "--input-shape", "1,8,8", *options]) == 0
    assert "registered lesions version 1" in capsys.readouterr().out
    card = PackageStore(repository).read_card("lesions", "1")
    assert (card.architecture, card.lipschitz_bound, card.class_names) == (
        "onnx",
        None,
        ("benign", "malignant"),
    )
    assert main([*command, "--input-shape", "3,8,8", *options]) == 2
    assert "--input-shape says" in capsys.readouterr().err
    assert PackageStore(repository).versions("lesions") == ["1"]
