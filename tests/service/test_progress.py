"""Progress bars are for a person at a terminal: none with ``--quiet`` or when stderr is not
one (``hycas train``, ``hycas evaluate``, ``hycas certify``)."""

from __future__ import annotations

import io
import sys

import pytest

from service.cli import build_parser
from service.commands import certification_progress
from service.model_commands import show_progress
from tests.service.test_cli_first_hour import small_parameters
from tests.workers.small_models import SmallModelSource


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("argv", "terminal", "shown"),
    [
        (["train", "--model-id", "m"], True, True),
        (["train", "--model-id", "m", "--quiet"], True, False),
        (["train", "--model-id", "m"], False, False),
        (["evaluate", "--model", "m", "--output", "o"], True, True),
        (["evaluate", "--model", "m", "--output", "o", "--no-progress"], True, False),
    ],
)
def test_train_and_evaluate_show_progress_only_on_a_terminal(monkeypatch, argv, terminal, shown):
    monkeypatch.setattr(sys, "stderr", Terminal() if terminal else io.StringIO())
    assert show_progress(build_parser().parse_args(argv)) is shown


def test_a_quiet_certify_prints_nothing_on_a_terminal():
    terminal = Terminal()
    loaded = SmallModelSource().load("tiny-hycas", None)
    parameters = small_parameters()
    with certification_progress("digit.png", loaded, parameters, terminal, quiet=True) as report:
        report(parameters.total_samples_planned, parameters.total_samples_planned)
    assert terminal.getvalue() == ""
    assert build_parser().parse_args(["certify", "x.png", "--model", "m", "--quiet"]).quiet
