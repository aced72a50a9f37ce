"""CI runs the deployment tests for real (a missing tool fails them instead of skipping), and
both suites, the default and the slow one, each timed."""

from __future__ import annotations

import os
import re
import subprocess

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


def run_suite_function() -> str:
    script = (ROOT / ".ci" / "run").read_text()
    match = re.search(r"^run_suite\(\) \{\n.*?^\}\n", script, re.M | re.S)
    assert match, ".ci/run defines no run_suite function"
    return match.group(0)


def test_ci_runs_the_default_suite_and_the_slow_one():
    script = (ROOT / ".ci" / "run").read_text()
    calls = re.findall(r'^\s*run_suite "([^"]+)" (.*)$', script, re.M)
    assert calls == [("default suite", "-q"), ("slow suite", "-q -m slow -n 0")]


@pytest.mark.parametrize(
    ("pytest_exit", "ci_exit"), [(0, 0), (1, 1), (5, 1)], ids=["passed", "failed", "no tests"]
)
def test_each_suite_prints_its_duration_and_fails_ci_when_it_fails(tmp_path, pytest_exit, ci_exit):
    fake = tmp_path / "pytest"
    fake.write_text(f'#!/bin/sh\necho "pytest $*"\nexit {pytest_exit}\n')
    fake.chmod(0o755)
    shell = f'{run_suite_function()}\nrun_suite "default suite" -q -m slow\nexit $?\n'
    done = subprocess.run(
        ["bash", "-c", shell],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"},
        check=False,
    )
    assert done.returncode == ci_exit, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "pytest -q -m slow"
    assert re.fullmatch(r"default suite: \d+ s", lines[1]), lines
    assert ("collected no tests" in done.stderr) == (pytest_exit == 5)
