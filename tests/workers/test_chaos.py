"""The chaos script, briefly: faults at random under a mixed workload lose and repeat nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.workers.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def test_fifteen_seconds_of_chaos_lose_nothing_and_end_nothing_twice():
    run = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--duration", "15", "--fault-every", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = dict(line.split(maxsplit=1) for line in run.stdout.splitlines() if line.strip())
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert report["lost"].startswith("0 ") and report["duplicated"].startswith("0 ")
    assert int(report["submitted"].split()[0]) > 0
