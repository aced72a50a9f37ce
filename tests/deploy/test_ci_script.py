"""CI runs the deployment tests for real: a missing tool fails them instead of skipping."""

from __future__ import annotations

import re

import pytest

from tests.deploy.conftest import require_binary
from tests.deploy.sources import ROOT

MISSING = "hycas-no-such-binary"


def test_ci_script_exports_ci_before_running_the_tests():
    script = (ROOT / ".ci" / "run").read_text()
    export = re.search(r"^export CI=1$", script, re.M)
    pytest_run = re.search(r"^[^#\n]*\bpytest\b", script, re.M)
    assert export and pytest_run and export.start() < pytest_run.start()


def test_a_missing_tool_fails_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match=MISSING):
        require_binary(MISSING)


def test_a_missing_tool_skips_on_a_developer_machine(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=MISSING):
        require_binary(MISSING)
