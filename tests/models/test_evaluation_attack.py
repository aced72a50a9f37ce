"""``hycas evaluate --attack``: accuracy under attack beside the certified accuracy, and each
image's ratio found / certified; the attack never lands inside a margin certificate."""

from __future__ import annotations

import functools
import json

import torch

import models
from models.data import load_digits_split
from models.evaluation import EvaluationReport, EvaluationSettings, evaluate_classifier
from service.cli import main
from tests.models.test_evaluation import evaluate_argv, save_classifier

RADII = (0.05, 0.1, 0.2)


@functools.cache
def _shipped_model() -> torch.nn.Module:
    model, _ = models.load("digits-hycas")
    return model


def _report(attack: bool) -> EvaluationReport:
    """The shipped model on 2 test images, with tiny budgets."""
    settings = EvaluationSettings(
        sigma=0.25,
        n0=10,
        n=40,
        ensemble=1,
        radii=RADII,
        attack=attack,
        attack_steps=4,
        attack_restarts=1,
        attack_predict_n=40,
    )
    data = load_digits_split("test").head(2)
    return evaluate_classifier(
        _shipped_model(), data, settings, model_id="m", version="1", sha256="ab", progress=False
    )


def test_accuracy_under_attack_bounds_the_certified_accuracy_from_above(tmp_path):
    report = _report(attack=True)
    plain = _report(attack=False)
    assert plain.summary.attacks is None
    assert plain.summary.certificates == report.summary.certificates  # no certificate changes

    attacks = report.summary.attacks
    assert attacks is not None and set(attacks) == {"smoothing", "margin"}
    assert attacks["smoothing"].attacked >= 1 and attacks["smoothing"].found >= 1
    margin = attacks["margin"]
    assert margin.attacked == 2 and margin.found >= 1
    assert margin.inside_certified == 0  # the margin bound is proved: no attack lands inside
    for image in report.images:
        if image.margin_attack_distance is not None:
            assert image.margin_attack_label != image.margin_label
            assert image.margin_attack_distance >= image.margin_radius
        ratio = image.found_over_certified("margin")
        assert ratio is None or ratio == image.margin_attack_distance / image.margin_radius
    assert sorted(margin.found_over_certified) == sorted(
        r for image in report.images if (r := image.found_over_certified("margin")) is not None
    )
    for name in ("smoothing", "margin"):
        for radius in (0.0, *RADII):
            empirical = report.empirical_accuracy(name, radius)
            assert report.certified_accuracy(name, radius) <= empirical
            assert empirical <= report.certified_accuracy(name, 0.0)
            assert attacks[name].empirical_robust_accuracy[f"{radius:g}"] == empirical

    report.write_json(tmp_path / "attacked.json")
    assert EvaluationReport.read_json(tmp_path / "attacked.json") == report


def test_hycas_evaluate_attack_writes_the_attacks_beside_the_certificates(tmp_path, capsys):
    save_classifier(tmp_path, "digits-small", tuple("0123456789"))
    common = ["--limit", "2", "--n", "20", "--ensemble", "1", "--no-smoothing", "--device", "cpu"]
    attack = ["--attack", "--attack-steps", "5", "--attack-restarts", "1"]
    assert main(evaluate_argv(tmp_path, "digits-small", *common, *attack)) == 0
    assert "margin attack" in capsys.readouterr().out
    attacked = json.loads((tmp_path / "out" / "digits-small.json").read_text())
    assert attacked["summary"]["settings"]["attack_steps"] == 5
    assert attacked["summary"]["attacks"]["margin"]["attacked"] == 2
    assert all(image["margin_attack_queries"] for image in attacked["images"])
    plot = (tmp_path / "out" / "digits-small.png").read_bytes()
    assert plot[:8] == b"\x89PNG\r\n\x1a\n"
