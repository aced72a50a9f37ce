"""A private ``redis-server`` for fault tests: its own port and folder, append-only file on.

It can be killed (SIGKILL), shut down gracefully (``SHUTDOWN``, which saves), and started
again on the same port from the same folder, so its data survives as it would in production.
Only this server is ever stopped; the shared Redis of the other tests is never touched.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None, fsync: str = "always") -> None:
        """``fsync``: the append-only file's ``appendfsync`` (production uses ``everysec``)."""
        self.directory = directory
        self.fsync = fsync
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.fsync,
                "--save",
                "",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)
        # Loading the append-only file finishes before PING answers PONG.
        client.close()

    def kill(self) -> None:
        """SIGKILL: no save, no goodbye; the append-only file is what survives."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def shutdown(self) -> None:
        """A graceful stop (``SHUTDOWN``): clients are disconnected, the data is saved."""
        assert self.process is not None
        with contextlib.suppress(redis.ConnectionError):  # it hangs up as it exits
            redis.Redis(port=self.port).shutdown()
        self.process.wait(timeout=10)

    def restart(self, *, graceful: bool, down_seconds: float = 1.0) -> None:
        self.shutdown() if graceful else self.kill()
        time.sleep(down_seconds)
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()
