"""Settings of the whole test run, made before any test module imports torch."""

from __future__ import annotations

import os

# libgomp's threads spin while they wait for each other: on a machine whose cores are busy
# with other work (CI, a shared workstation) that makes torch an order of magnitude slower.
# Waiting threads that sleep cost nothing when the cores are free. Subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
