"""A light gateway: importing it in embedded mode loads no Celery."""

from __future__ import annotations

import os
import subprocess
import sys

CELERY_LOADED = "import sys, {module}; print(sorted(m for m in sys.modules if m == 'celery'))"


def imported_celery(module: str) -> str:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HYCAS_")}
    result = subprocess.run(
        [sys.executable, "-c", CELERY_LOADED.format(module=module)],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_importing_the_embedded_gateway_loads_no_celery():
    assert imported_celery("service.main") == "[]"


def test_the_celery_app_module_loads_celery():
    """The probe can fail: the worker's entry point does load it."""
    assert imported_celery("workers.app") == "['celery']"
