"""``hycas certify`` refusals that need no model, and the commands' flags."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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


def _bad_files(folder):
    """A plain file, a text file posing as an .npz, and CIFAR folders with damaged batches."""
    (folder / "afile").write_text("not a folder")
    (folder / "text.npz").write_text("not an archive")
    (folder / "cut").mkdir()
    (folder / "cut" / "batches.meta").write_bytes(b"\x80\x04\x95\x10")
    (folder / "nolabels").mkdir()
    import pickle

    import numpy as np

    (folder / "nolabels" / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a"]}))
    batch = {b"data": np.zeros((1, 3072), dtype=np.uint8)}
    (folder / "nolabels" / "test_batch").write_bytes(pickle.dumps(batch))


EVALUATE = ["evaluate", "--model", "digits-hycas", "--limit", "1", "--n", "5", "--n0", "2"]
EVALUATE_TO = [*EVALUATE, "--output", "{tmp}/o"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["models", "list", "--repository", "{tmp}/afile"], "is not a folder"),
        (["models", "list", "--repository", "{tmp}/none"], "does not exist"),
        ([*EVALUATE, "--output", "{tmp}/afile/x"], "is not a folder this user can write"),
        ([*EVALUATE, "--output", ""], "names no file"),
        ([*EVALUATE_TO, "--device", "bogus"], "unknown device 'bogus'"),
        ([*EVALUATE_TO, "--device", "mps"], "is not supported"),
        (
            [*EVALUATE_TO, "--dataset", "dermamnist", "--data-path", "{tmp}/x"],
            "does not exist",
        ),
        (
            [*EVALUATE_TO, "--dataset", "dermamnist", "--data-path", "{tmp}/text.npz"],
            "not a MedMNIST .npz file",
        ),
        (
            [*EVALUATE_TO, "--dataset", "cifar10", "--data-path", "{tmp}/cut"],
            "not a readable CIFAR batch",
        ),
        (
            [*EVALUATE_TO, "--dataset", "cifar10", "--data-path", "{tmp}/nolabels"],
            "has no 'labels'",
        ),
        (
            ["certify", "{tmp}/afile", "--model", "m", "--server", "http://[::1"],
            "is not a server URL",
        ),
        (
            ["train", "--model-id", "m", "--report", "{tmp}/afile/r", "--epochs", "1"],
            "is not a folder this user can write",
        ),
    ],
)
def test_a_bad_file_folder_device_or_url_is_one_line_not_a_traceback(tmp_path, capsys, argv, says):
    _bad_files(tmp_path)
    assert main([word.replace("{tmp}", str(tmp_path)) for word in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hycas: error: ") and says in err and "Traceback" not in err, err
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--model-id", "m", "--threads", "0"],
        ["serve", "--port", "99999"],
        ["worker", "--metrics-port", "0"],
        ["evaluate", "--model", "m", "--output", "o", "--radii", "0.5,inf"],
        ["evaluate", "--model", "m", "--output", "o", "--radii", "-1"],
        ["evaluate", "--model", "m", "--output", "o", "--seed=-1"],
        ["train", "--model-id", "m", "--seed", "9223372036854775808"],
    ],
)
def test_out_of_range_options_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert "error: argument" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_is_refused_before_any_work(tmp_path, capsys):
    assert main([*EVALUATE, "--output", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "CUDA is not available on this machine" in capsys.readouterr().err
