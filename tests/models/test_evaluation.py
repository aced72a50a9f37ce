"""Evaluation: the certified-accuracy arithmetic, the JSON report and ``hycas evaluate``."""

from __future__ import annotations

import json

import pytest
import torch

from models import build_hycas
from models.data import load_digits_split
from models.evaluation import (
    EvaluationReport,
    EvaluationSettings,
    ImageCertificates,
    evaluate_classifier,
    summarize_certificate,
)
from service.cli import main
from tests.models.test_repository import save

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
        ("best", 0.75, 0.0, (0.6 + 0.2 + 0.9) / 4, 0.5),
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
        "best",
    }
    report.write_json(tmp_path / "r.json")
    assert EvaluationReport.read_json(tmp_path / "r.json") == report


def test_hycas_evaluate_writes_json_and_png(tmp_path, capsys):
    torch.manual_seed(0)
    save(build_hycas((1, 8, 8), 10, width=4), tmp_path, model_id="digits-small")
    output = tmp_path / "out" / "digits-small"
    argv = ["evaluate", "--model", "digits-small", "--repository", str(tmp_path)]
    argv += ["--limit", "4", "--n", "50", "--ensemble", "2", "--output", str(output)]
    argv += ["--radii", "0.1,0.3", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    assert "certificate" in capsys.readouterr().out
    report = json.loads(output.with_suffix(".json").read_text())
    summary = report["summary"]
    assert report["model_id"] == "digits-small" and summary["images"] == 4
    assert summary["settings"]["sigma"] == 0.25  # the card's sigma by default
    assert set(summary["certificates"]["best"]["certified_accuracy"]) == {"0.1", "0.3"}
    assert len(report["images"]) == 4
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hycas_evaluate_refuses_a_dataset_of_another_shape(tmp_path, capsys):
    torch.manual_seed(0)
    save(build_hycas((1, 8, 8), 3, width=4), tmp_path, model_id="three")
    argv = ["evaluate", "--model", "three", "--repository", str(tmp_path), "--limit", "2"]
    argv += ["--output", str(tmp_path / "x"), "--no-progress"]
    assert main(argv) == 2
    assert "expects (1, 8, 8) and 3" in capsys.readouterr().err
