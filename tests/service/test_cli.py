"""``hycas certify`` refusals that need no model, and the commands' flags."""

from __future__ import annotations

import os
import subprocess
import sys

from service.cli import build_parser, main


def test_certify_refuses_a_missing_file(tmp_path, capsys):
    assert main(["certify", str(tmp_path / "absent.png"), "--model", "digits-hycas"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_service_commands_parse():
    parser = build_parser()
    serve = parser.parse_args(["serve", "--host", "0.0.0.0", "--port", "9000"])
    assert (serve.host, serve.port) == ("0.0.0.0", 9000)
    worker = parser.parse_args(["worker", "--concurrency", "2", "--pool", "solo"])
    assert (worker.concurrency, worker.pool) == (2, "solo")
    certify = parser.parse_args(
        ["certify", "x.png", "--model", "m", "--methods", "margin,smoothing", "--n", "10"]
    )
    assert certify.methods == ["margin", "smoothing"] and certify.n == 10


def test_train_and_evaluate_take_every_evaluation_setting_of_a_training_request():
    from models.training import EVALUATION_OPTIONS

    parser = build_parser()
    values = {"n0": "5", "n": "70", "alpha": "0.01", "batch_size": "3", "ensemble": "2"}
    assert tuple(values) == EVALUATION_OPTIONS
    options = [w for name, v in values.items() for w in (f"--{name.replace('_', '-')}", v)]
    evaluate = parser.parse_args(["evaluate", "--model", "m", "--output", "o", *options])
    eval_options = [w.replace("--", "--eval-") if w.startswith("--") else w for w in options]
    train = parser.parse_args(["train", "--model-id", "m", *eval_options])
    for name, value in values.items():
        expected = float(value) if name == "alpha" else int(value)
        assert getattr(evaluate, name) == getattr(train, f"eval_{name}") == expected


def test_train_and_evaluate_name_every_dataset_of_the_catalog_and_take_its_path():
    from models.data import DATASETS

    parser = build_parser()
    for command in ("train", "evaluate"):
        action = next(
            a
            for a in parser._subparsers._group_actions[0].choices[command]._actions
            if "--dataset" in a.option_strings
        )
        named = {word.strip(" ,").removesuffix(" (default)") for word in action.help.split(",")}
        named = {part for word in named for part in word.split(" or ")}
        assert named == set(DATASETS), command
    train = parser.parse_args(["train", "--model-id", "m", "--data-path", "d"])
    evaluate = parser.parse_args(["evaluate", "--model", "m", "--output", "o", "--data-path", "d"])
    assert (train.dataset, train.data_path) == (None, "d")  # the request's default: digits
    assert (evaluate.dataset, evaluate.data_path) == ("digits", "d")


def test_the_hycas_command_makes_openmp_waiters_sleep_unless_told_otherwise():
    code = (
        "import os, sys, service.cli\nprint(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    )
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for given, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        if given:
            environment["OMP_WAIT_POLICY"] = given
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=environment
        )
        assert result.returncode == 0, result.stderr
        # Set before torch loads, or libgomp would have read the old value already.
        assert result.stdout.split() == [expected, "False"]
