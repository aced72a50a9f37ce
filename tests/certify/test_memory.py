"""Memory: the engine streams, so n = 200,000 never materializes n noisy copies."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter so that its peak RSS belongs to this certification alone.
MEASUREMENT = textwrap.dedent(
    """
    import json
    import psutil, torch
    from certify import smoothing_certify

    model = torch.nn.Sequential(
        torch.nn.AvgPool2d(8), torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10)
    )
    image = torch.rand((3, 32, 32), generator=torch.Generator().manual_seed(0))
    def peak_rss():
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    # A short run first, so that lazily loaded code and allocator pools count as baseline.
    smoothing_certify(model, image, sigma=0.25, n0=100, n=1000, batch_size=1000, seed=0)
    # Reset the kernel's peak RSS to the current RSS: the import's transient peak must not count.
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    baseline = psutil.Process().memory_info().rss
    certificate = smoothing_certify(
        model, image, sigma=0.25, n0=100, n=200_000, batch_size=1000, seed=1
    )
    print(json.dumps({"growth": peak_rss() - baseline, "samples": certificate.samples}))
    """
)


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset"
)
def test_peak_memory_stays_far_below_n_materialized_copies():
    completed = subprocess.run(
        [sys.executable, "-c", MEASUREMENT],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    measured = json.loads(completed.stdout.strip().splitlines()[-1])
    materialized = 200_000 * 3 * 32 * 32 * 4  # float32 copies: 2.46 GB
    assert measured["samples"] == 200_100
    assert measured["growth"] < materialized / 20, measured
