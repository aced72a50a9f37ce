"""Settings of the whole test run, made before any test module imports torch."""

from __future__ import annotations

import os

# libgomp's threads spin while they wait for each other: on a machine whose cores are busy
# with other work (CI, a shared workstation) that makes torch an order of magnitude slower.
# Waiting threads that sleep cost nothing when the cores are free. Subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Under pytest-xdist (the default run: one process a core), each process keeps to its share of
# the cores, so that processes do not oversubscribe them. Subprocesses inherit it.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))
