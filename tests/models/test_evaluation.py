"""Evaluation: the certified-accuracy arithmetic, the JSON report and ``hycas evaluate``."""

from __future__ import annotations

import json

import pytest
import torch

from models import build_hycas, save_model
from models.data import load_digits_split
from models.evaluation import (
    EvaluationReport,
    EvaluationSettings,
    ImageCertificates,
    evaluate_classifier,
    summarize_certificate,
)
from service.cli import main
from tests.models.test_datasets import write_image_folder
from tests.models.test_repository import DATASET, TRAINING

IMAGES = (
    # correct by both; margin larger
    ImageCertificates(
        0, 3, 3, smoothing_label=3, smoothing_radius=0.3, margin_label=3, margin_radius=0.6
    ),
    # smoothing abstains; margin right
    ImageCertificates(
        1, 1, 1, smoothing_label=None, smoothing_radius=0.0, margin_label=1, margin_radius=0.2
    ),
    # smoothing right; margin wrong
    ImageCertificates(
        2, 0, 2, smoothing_label=0, smoothing_radius=0.9, margin_label=2, margin_radius=0.4
    ),
    # both wrong
    ImageCertificates(
        3, 4, 5, smoothing_label=5, smoothing_radius=1.2, margin_label=5, margin_radius=0.1
    ),
)


@pytest.mark.parametrize(
    ("certificate", "accuracy", "abstain", "acr", "at_half"),
    [
        ("smoothing", 0.5, 0.25, (0.3 + 0.9) / 4, 0.25),
        ("margin", 0.5, 0.0, (0.6 + 0.2) / 4, 0.25),
        ("either", 0.75, 0.0, (0.6 + 0.2 + 0.9) / 4, 0.5),
    ],
)
def test_certified_accuracy_counts_only_true_labels(certificate, accuracy, abstain, acr, at_half):
    summary = summarize_certificate(IMAGES, certificate, (0.5, 1.0))
    assert summary.accuracy == accuracy
    assert summary.abstention_rate == abstain
    assert summary.average_certified_radius == pytest.approx(acr)
    assert summary.certified_accuracy == {"0.5": at_half, "1": 0.0}


def test_summary_refuses_a_certificate_that_was_not_run():
    only_margin = (ImageCertificates(0, 1, 1, margin_label=1, margin_radius=0.5),)
    with pytest.raises(ValueError, match="not run"):
        summarize_certificate(only_margin, "smoothing", (0.5,))


def test_report_round_trips_through_json(tmp_path):
    torch.manual_seed(0)
    model = build_hycas((1, 8, 8), 10, width=4)
    data = load_digits_split("test").head(3)
    settings = EvaluationSettings(sigma=0.25, n0=10, n=20, ensemble=2, radii=(0.1, 0.2))
    report = evaluate_classifier(
        model, data, settings, model_id="m", version="1", sha256="ab", progress=False
    )
    assert len(report.images) == 3 and set(report.summary.certificates) == {
        "smoothing",
        "margin",
        "either",
    }
    report.write_json(tmp_path / "r.json")
    assert EvaluationReport.read_json(tmp_path / "r.json") == report


def save_classifier(repository, model_id: str, class_names: tuple[str, ...], size: int = 8):
    torch.manual_seed(0)
    save_model(
        build_hycas((1, size, size), len(class_names), width=4),
        model_id=model_id,
        class_names=class_names,
        sigma=0.25,
        dataset=DATASET,
        training=TRAINING,
        metrics={},
        repository=repository,
    )


def evaluate_argv(repository, model_id: str, *options: str) -> list[str]:
    output = str(repository / "out" / model_id)
    return [
        "evaluate",
        "--model",
        model_id,
        "--repository",
        str(repository),
        "--output",
        output,
        "--no-progress",
        *options,
    ]


def test_hycas_evaluate_writes_json_and_png(tmp_path, capsys):
    save_classifier(tmp_path, "digits-small", tuple("0123456789"))
    output = tmp_path / "out" / "digits-small"
    argv = evaluate_argv(tmp_path, "digits-small", "--limit", "4", "--n", "50")
    argv += ["--ensemble", "2", "--radii", "0.1,0.3", "--device", "cpu"]
    assert main(argv) == 0
    assert "certificate" in capsys.readouterr().out
    report = json.loads(output.with_suffix(".json").read_text())
    summary = report["summary"]
    assert report["model_id"] == "digits-small" and summary["images"] == 4
    assert summary["settings"]["sigma"] == 0.25  # the card's sigma by default
    assert set(summary["certificates"]["either"]["certified_accuracy"]) == {"0.1", "0.3"}
    assert len(report["images"]) == 4
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hycas_evaluate_refuses_a_dataset_of_another_shape(tmp_path, capsys):
    save_classifier(tmp_path, "large", tuple("0123456789"), size=16)
    assert main(evaluate_argv(tmp_path, "large", "--limit", "2")) == 2
    assert "expects (1, 16, 16)" in capsys.readouterr().err


def test_hycas_evaluate_labels_an_image_folder_by_the_card_class_names(tmp_path, capsys):
    save_classifier(tmp_path, "abc", ("a", "b", "c"))
    write_image_folder(tmp_path / "data", {"test": "ac"})
    argv = evaluate_argv(tmp_path, "abc", "--dataset", "image-folder", "--n", "20")
    argv += ["--data-path", str(tmp_path / "data"), "--ensemble", "2", "--device", "cpu"]
    assert main(argv) == 0, capsys.readouterr().err
    report = EvaluationReport.read_json(tmp_path / "out" / "abc.json")
    assert [image.label for image in report.images] == [0, 0, 2, 2]


def test_hycas_evaluate_refuses_an_image_folder_with_a_class_the_card_lacks(tmp_path, capsys):
    save_classifier(tmp_path, "abc", ("a", "b", "c"))
    write_image_folder(tmp_path / "data", {"test": "acd"})
    data = ("--dataset", "image-folder", "--data-path", str(tmp_path / "data"))
    assert main(evaluate_argv(tmp_path, "abc", *data)) == 2
    error = capsys.readouterr().err
    assert "['d']" in error and "['a', 'b', 'c']" in error
    assert not (tmp_path / "out" / "abc.json").exists()
