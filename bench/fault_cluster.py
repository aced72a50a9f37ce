"""The private Redis and the distributed settings the fault benchmarks run against.

``bench.chaos`` and ``bench.worker_loss`` each start their own ``redis-server`` (append-only
file, a free port) in a fresh temporary folder, never the shared one on 6379.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from service.core.config import Settings
from tests.workers.conftest import distributed_settings
from tests.workers.redis_server import RedisServer


def start_fault_cluster(
    name: str, args: argparse.Namespace, *, fsync: str = "always", **overrides: object
) -> tuple[Path, RedisServer, Settings]:
    """A temporary folder ``hycas-<name>-…``, a started Redis in it, and settings with the
    key prefix ``hycas-<name>:`` and the heartbeat timeout and reaper interval of ``args``
    (``--heartbeat-timeout``, ``--reaper-interval``); ``overrides`` set other settings."""
    folder = Path(tempfile.mkdtemp(prefix=f"hycas-{name}-"))
    server = RedisServer(folder / "redis", fsync=fsync)
    server.start()
    settings = distributed_settings(
        f"hycas-{name}:",
        redis_url=server.url,
        heartbeat_timeout_seconds=args.heartbeat_timeout,
        reaper_interval_seconds=args.reaper_interval,
        **overrides,
    )
    return folder, server, settings
