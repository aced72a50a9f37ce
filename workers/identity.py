"""The name results give for what certified them: stable across restarts, no process id.

``HYCAS_WORKER_NAME`` when set; else, in a Celery worker, its node name (``name@host`` as
given by ``hycas worker --hostname``, ``celery@<host>`` by default), the same in every pool
process; else (the embedded pool of ``hycas serve``) the host name.
"""

from __future__ import annotations

import os
import socket
from functools import cache

from workers.config import ExecutionSettings

_celery_node_name: str | None = None


def remember_celery_node_name(sender: str, **_: object) -> None:
    """Celery's ``celeryd_after_setup`` receiver (connected by :mod:`workers.app`, so this
    module imports no Celery): ``sender`` is the worker's node name."""
    global _celery_node_name
    _celery_node_name = sender


def worker_name() -> str:
    """This process's name in results (``provenance.host``)."""
    configured = _configured_name(os.environ.get("HYCAS_WORKER_NAME"))
    return configured or _celery_node_name or socket.gethostname()


@cache
def _configured_name(_variable: str | None) -> str | None:
    # Reading the settings costs milliseconds, a job's whole overhead: once per value.
    return ExecutionSettings().worker_name
