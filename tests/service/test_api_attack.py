"""The ``attack`` method over HTTP (embedded mode) and from ``hycas certify``: an upper bound
beside each certificate, with its bracket, never the prediction; alone it is refused."""

from __future__ import annotations

import numpy as np

from service.cli import main
from tests.service.conftest import png_bytes, wait_until_finished
from tests.workers.small_models import SMALL_MODEL_ID

IMAGE = np.random.default_rng(0).random((8, 8)).tolist()


def test_attack_over_http_reports_an_upper_bound_per_classifier_and_their_brackets(client):
    response = client.post(
        "/v1/certify",
        json={
            "model": SMALL_MODEL_ID,
            "image": IMAGE,
            "methods": "smoothing,margin,attack",
            "n": 200,
            "n0": 16,
            "batch_size": 100,
            "seed": 5,
        },
    )
    assert response.status_code == 202, response.text
    job = wait_until_finished(client, response.json()["id"], timeout=120)
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["samples_done"] == job["progress"]["samples_planned"]

    result = job["result"]
    attack = result["certificates"]["attack"]
    assert attack["method"] == "attack" and "radius" not in attack
    assert {"label_found", "distance", "classifier", "queries", "seconds"} <= set(attack)
    findings = [attack, *attack["other_classifiers"]]
    assert [f["classifier"] for f in findings] == ["smoothed", "frozen_ensemble"]
    for finding in findings:
        assert finding["queries"] <= finding["max_queries"]
        assert finding["guarantee"].startswith("Certifies nothing")
        assert isinstance(finding["details"]["seed"], str)
    assert result["prediction"]["method"] == "smoothing"
    margin = result["certificates"]["margin"]
    frozen = attack["other_classifiers"][0]
    assert frozen["label"] == margin["label"] and frozen["distance"] is not None
    (bracket,) = [b for b in result["brackets"] if b["classifier"] == "frozen_ensemble"]
    assert bracket["certified"] == margin["radius"] <= bracket["found"] == frozen["distance"]
    assert bracket["consistent"] and bracket["method"] == "margin"


def test_an_attack_alone_is_a_422_and_it_is_not_a_default_method(client):
    response = client.post(
        "/v1/certify", json={"model": SMALL_MODEL_ID, "image": IMAGE, "methods": ["attack"]}
    )
    assert response.status_code == 422, response.text
    assert "upper bound beside a certificate" in response.json()["error"]["message"]
    response = client.post(
        "/v1/certify?wait=20",
        json={"model": SMALL_MODEL_ID, "image": IMAGE, "methods": ["margin"], "seed": 1},
    )
    assert "attack" not in response.json()["result"]["certificates"]
    enum = client.get("/openapi.json").json()["components"]["schemas"]["CertificationMethod"]
    assert "attack" in enum["enum"]


def test_hycas_certify_runs_the_attack_it_is_asked_for(tmp_path, capsys):
    path = tmp_path / "digit.png"
    path.write_bytes(png_bytes(size=(8, 8), seed=2))
    arguments = ["certify", str(path), "--model", "digits-hycas", "--seed", "3"]
    assert main([*arguments, "--methods", "attack"]) == 2
    assert "upper bound beside a certificate" in capsys.readouterr().err
    assert main([*arguments, "--methods", "margin,attack"]) == 0
    printed = capsys.readouterr().out
    assert "prediction" in printed and "the margin certificate, the first method" in printed
    (attack,) = [line for line in printed.splitlines() if line.startswith("attack ")]
    assert "(frozen_ensemble; " in attack and " queries; " in attack
    assert "Certifies nothing (an attack gives an upper bound" in printed
