"""The command line as a new user meets it: what runs, which models exist and what they are,
and refusals as one plain line (exit code 2, no traceback, no pydantic report)."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.repository import SHIPPED_REPOSITORY
from service.cli import main
from service.commands import certification_progress, startup_line
from service.main import create_app
from tests.service.conftest import embedded_settings
from tests.service.gateway_process import GatewayProcess
from tests.service.test_model_integrity import add_version, flip_a_weight_byte
from tests.workers.small_models import SMALL_MODEL_ID, SmallModelSource
from workers.certification import CertificationMethod, CertificationParameters

MODEL = "digits-hycas"
CARD = json.loads((SHIPPED_REPOSITORY / MODEL / "1" / "model.json").read_text())


def refusal(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("hycas: error: ")
    assert "Traceback" not in captured.err and "validation error" not in captured.err
    return lines[0]


@pytest.fixture
def digit_file(tmp_path):
    path = tmp_path / "digit.npy"
    np.save(path, np.full((8, 8), 0.5, dtype=np.float32))
    return path


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ["--methods", "foo"],
            "--methods: input should be 'smoothing', 'margin', 'radius_test' or 'attack'",
        ),
        (["--methods", "margin,margin"], "lists a method twice"),
        (["--n", "0"], "n=0 is out of bounds"),
        (["--sigma", "0.5"], "sigma=0.5 is not supported"),
    ],
)
def test_certify_refuses_bad_options_in_one_line(digit_file, capsys, arguments, expected):
    assert main(["certify", str(digit_file), "--model", MODEL, *arguments]) == 2
    assert expected in refusal(capsys)


def test_certify_refuses_an_unknown_model_or_version_in_one_line(digit_file, capsys):
    assert main(["certify", str(digit_file), "--model", "nope"]) == 2
    assert "no model 'nope'" in refusal(capsys)
    assert main(["certify", str(digit_file), "--model", MODEL, "--model-version", "9"]) == 2
    assert "has no version '9'" in refusal(capsys)


def test_certify_refuses_an_unreadable_or_undecodable_file_in_one_line(tmp_path, capsys):
    assert main(["certify", str(tmp_path), "--model", MODEL]) == 2
    assert f"cannot read {tmp_path}" in refusal(capsys)
    garbage = tmp_path / "x.png"
    garbage.write_bytes(b"not an image at all")
    assert main(["certify", str(garbage), "--model", MODEL]) == 2
    refusal(capsys)


def test_certify_refuses_a_tampered_model_in_one_line(tmp_path, digit_file, capsys, monkeypatch):
    flip_a_weight_byte(add_version(tmp_path, "1"))
    monkeypatch.setenv("HYCAS_MODEL_REPOSITORY", str(tmp_path))
    assert main(["certify", str(digit_file), "--model", MODEL]) == 2
    assert "SHA-256" in refusal(capsys)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def small_parameters() -> CertificationParameters:
    return CertificationParameters(
        methods=(CertificationMethod.SMOOTHING, CertificationMethod.MARGIN),
        sigma=0.25,
        alpha=0.001,
        n0=100,
        n=1000,
        batch_size=100,
        ensemble=2,
        target_radius=None,
        seed=1,
    )


def test_certify_says_what_it_runs_and_shows_progress_on_a_terminal():
    loaded = SmallModelSource().load(SMALL_MODEL_ID, None)
    terminal = Terminal()
    with certification_progress("digit.png", loaded, small_parameters(), terminal) as progress:
        for done in (550, 1102):
            time.sleep(0.2)  # tqdm redraws at most every 0.1 s
            progress(done, 1102)
    shown = terminal.getvalue()
    assert shown.startswith(
        "certifying digit.png with tiny-hycas v1: smoothing (1,100 forward passes), "
        "margin (2 forward passes)\n"
    )
    assert "550/1102" in shown and "1102/1102" in shown


def test_certify_is_quiet_when_not_on_a_terminal():
    loaded = SmallModelSource().load(SMALL_MODEL_ID, None)
    pipe = io.StringIO()
    with certification_progress("digit.png", loaded, small_parameters(), pipe) as progress:
        progress(1102, 1102)
    assert pipe.getvalue() == ""


@pytest.mark.parametrize(
    ("host", "shown"), [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::", "[::1]")]
)
def test_serve_announces_mode_models_and_docs(host, shown):
    app = create_app(embedded_settings(), SmallModelSource())
    with TestClient(app):
        line = startup_line(app.state.runtime, host, 8000)
    assert line == (
        "hycas serve: embedded mode (jobs run in this process); models: tiny-hycas@1; "
        f"docs: http://{shown}:8000/docs"
    )


def test_serve_names_the_versions_that_fail_to_load(tmp_path):
    add_version(tmp_path, "1")
    flip_a_weight_byte(add_version(tmp_path, "2"))
    app = create_app(embedded_settings(model_repository=tmp_path))
    with TestClient(app):
        line = startup_line(app.state.runtime, "127.0.0.1", 8000)
    assert f"models: {MODEL}@1; unavailable: {MODEL}@2 (reasons at /readyz)" in line


def test_models_list_shows_each_model_as_a_table(capsys):
    assert main(["models", "list"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["MODEL", "VERSIONS", "DEFAULT", "INPUT", "CLASSES", "SIGMA", "BOUND"]
    assert row.split()[:4] == [MODEL, "1", "1", "1×8×8"]
    assert "10 (0, 1, 2, …, 9)" in row
    assert row.split()[-2:] == ["0.25", str(CARD["lipschitz_bound"])]


def test_models_list_as_json_lists_failing_versions_with_their_reason(tmp_path, capsys):
    add_version(tmp_path, "1")
    flip_a_weight_byte(add_version(tmp_path, "2"))
    assert main(["models", "list", "--json", "--repository", str(tmp_path)]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["models"]
    assert entry["default_version"] == "1"
    assert entry["input_shape"] == [1, 8, 8] and entry["sigma"] == 0.25
    assert entry["lipschitz_bound"] == CARD["lipschitz_bound"]
    assert entry["versions"][0] == {"version": "1", "status": "available"}
    assert entry["versions"][1]["status"] == "unavailable"
    assert "SHA-256" in entry["versions"][1]["reason"]


def test_describe_a_packaged_model_gives_its_cards_bound(capsys):
    assert main(["describe", "--model", MODEL]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{MODEL} v1: HyCAS for input [1, 8, 8] with 10 classes")
    assert f"{CARD['lipschitz_bound']} (its card;" in out
    assert "untrained" not in out
    assert main(["describe", "--model", MODEL, "--version", "1", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["card_lipschitz_bound"] == CARD["lipschitz_bound"]
    assert described["lipschitz_bound"] <= described["card_lipschitz_bound"]
    assert (described["id"], described["version"], described["sigma"]) == (MODEL, "1", 0.25)


def test_describe_an_untrained_network_says_why_its_bound_differs(capsys):
    assert main(["describe", "--input-shape", "1,8,8"]) == 0
    out = capsys.readouterr().out
    assert "(untrained)" in out.splitlines()[0]
    assert "a trained model of the same shape has a different bound" in " ".join(out.split())
    assert "hycas describe --model ID" in out
    assert main(["describe", "--input-shape", "1,8,8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trained"] is False


def test_describe_refusals_are_one_line(tmp_path, capsys):
    assert main(["describe", "--model", "nope"]) == 2
    assert "no model 'nope'" in refusal(capsys)
    assert main(["describe", "--model", MODEL, "--input-shape", "1,8,8"]) == 2
    assert "--input-shape" in refusal(capsys)
    flip_a_weight_byte(add_version(tmp_path, "1"))
    assert main(["describe", "--model", MODEL, "--repository", str(tmp_path)]) == 2
    assert "SHA-256" in refusal(capsys)


def test_a_real_hycas_serve_prints_its_start_up_line_before_it_answers(tmp_path):
    gateway = GatewayProcess(tmp_path / "serve.log")
    try:
        gateway.wait_ready()
        lines = gateway.log().splitlines()
    finally:
        gateway.stop()
    announced = lines.index(
        f"hycas serve: embedded mode (jobs run in this process); models: {MODEL}@1; "
        f"docs: http://127.0.0.1:{gateway.port}/docs"
    )
    serving = next(i for i, line in enumerate(lines) if "Uvicorn running on" in line)
    assert announced < serving
