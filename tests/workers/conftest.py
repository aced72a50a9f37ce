"""Real Redis (a dedicated database, a key prefix per test) and real Celery worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.core.config import Settings
from tests.workers.redis_server import RedisServer
from workers.app import create_celery_app

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("HYCAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
"""Database 11 is the tests' own; every key they write also carries a unique prefix."""


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(
            f"no Redis at {REDIS_URL}: start redis-server (CI does) or deselect with -m 'not redis'"
        )
    return client


def delete_keys(client: redis.Redis, pattern: str) -> None:
    keys = list(client.scan_iter(match=pattern, count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    prefix = f"hycas-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_keys(redis_client, f"{prefix}*")
    delete_keys(redis_client, f"_kombu.binding*.{prefix}*")


def distributed_settings(prefix: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "redis_url": REDIS_URL,
        "key_prefix": prefix,
        "queue_name": f"{prefix}queue",
        "default_n": 200,
        "default_batch_size": 100,
        "broker_restore_interval_seconds": 1,
    }
    values.update(overrides)
    return Settings(**values)


def settings_environment(settings: Settings, metrics_dir: Path | None = None) -> dict[str, str]:
    """The ``HYCAS_*`` variables that reproduce ``settings`` in a worker process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYCAS_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    for name in (
        "redis_url",
        "key_prefix",
        "queue_name",
        "result_ttl_seconds",
        "image_ttl_seconds",
        "task_time_limit_seconds",
        "task_max_attempts",
        "broker_restore_interval_seconds",
        "heartbeat_timeout_seconds",
        "reaper_interval_seconds",
    ):
        env[f"HYCAS_{name.upper()}"] = str(getattr(settings, name))
    if settings.broker_visibility_timeout_seconds is not None:
        env["HYCAS_BROKER_VISIBILITY_TIMEOUT_SECONDS"] = str(
            settings.broker_visibility_timeout_seconds
        )
    if settings.worker_jobs_per_process is not None:
        env["HYCAS_WORKER_JOBS_PER_PROCESS"] = str(settings.worker_jobs_per_process)
    if metrics_dir is not None:
        env["HYCAS_METRICS_DIR"] = str(metrics_dir)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    env["PYTHONPATH"] = str(ROOT)
    return env


class WorkerProcess:
    """A ``hycas worker`` subprocess (``--pool=solo`` unless ``pool=`` says otherwise), ready
    once it answers a Celery ping. It serves the small test model unless ``module=
    "service.cli"`` runs the real command on the repository of ``environment=``."""

    def __init__(self, settings: Settings, name: str, log_path: Path, **options: object) -> None:
        self.settings = settings
        self.hostname = f"{name}@{uuid.uuid4().hex[:8]}"
        self.log_path = log_path
        metrics_port = options.get("metrics_port")
        argv = [
            sys.executable,
            "-m",
            str(options.get("module", "tests.workers.worker_process")),
            "worker",
            f"--pool={options.get('pool', 'solo')}",
            f"--hostname={self.hostname}",
        ]
        if metrics_port is not None:
            argv.append(f"--metrics-port={metrics_port}")
        self._log = log_path.open("wb")
        environment = settings_environment(settings, options.get("metrics_dir"))  # type: ignore[arg-type]
        environment.update(options.get("environment", {}))  # type: ignore[arg-type]
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        celery = create_celery_app(self.settings)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.log()
                if celery.control.ping(destination=[self.hostname], timeout=0.5):
                    return
            raise AssertionError(f"worker {self.hostname} not ready:\n{self.log()}")
        finally:
            celery.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def children(self) -> list[int]:
        """The pids of this worker's pool processes (prefork), read from ``/proc``."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                pids.append(int(stat.parent.name))
        return pids

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator:
    started: list[WorkerProcess] = []

    def start(settings: Settings, name: str = "worker", **options: object) -> WorkerProcess:
        worker = WorkerProcess(settings, name, tmp_path / f"{name}.log", **options)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (append-only file on), which it may kill and restart."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
