"""The name results give for what certified them: stable across restarts, no process id.

``HYCAS_WORKER_NAME`` when set; else, in a Celery worker, its node name (``name@host`` as
given by ``hycas worker --hostname``, ``celery@<host>`` by default), the same in every pool
process; else (the embedded pool of ``hycas serve``) the host name.
"""

from __future__ import annotations

import socket

from celery.signals import celeryd_after_setup

from workers.config import ExecutionSettings

_celery_node_name: str | None = None


@celeryd_after_setup.connect
def _remember_node_name(sender: str, **_: object) -> None:
    # Sent in the worker's main process before its pool forks: every pool process inherits it.
    global _celery_node_name
    _celery_node_name = sender


def worker_name() -> str:
    """This process's name in results (``provenance.host``)."""
    return ExecutionSettings().worker_name or _celery_node_name or socket.gethostname()
