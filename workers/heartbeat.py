"""Heartbeats of running jobs: proof, renewed every few seconds, that a job's runner is alive.

A runner's claim sets the job's heartbeat (``{prefix}heartbeat:{job_id}``, value: the run's
holder token, TTL ``HYCAS_HEARTBEAT_TIMEOUT_SECONDS``) in the same transaction; a background
thread refreshes it three times per timeout while the certification runs (the certifying
thread may be busy in torch for seconds). A job ``running`` without a live heartbeat has lost
its runner: the reaper (:mod:`workers.reaper`) requeues it, and a redelivered message may
claim it at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from types import TracebackType

import redis

from workers.store import JobStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holder:
    """Who runs a job: the worker's stable name, its process and a token unique to the run."""

    worker: str
    pid: int
    run: str

    @classmethod
    def new(cls, worker: str) -> Holder:
        return cls(worker=worker, pid=os.getpid(), run=uuid.uuid4().hex[:12])

    @classmethod
    def parse(cls, token: str) -> Holder | None:
        worker, _, rest = token.rpartition("|")
        worker, _, pid = worker.rpartition("|")
        if not worker or not pid.isdigit():
            return None
        return cls(worker=worker, pid=int(pid), run=rest)

    def token(self) -> str:
        return f"{self.worker}|{self.pid}|{self.run}"

    def is_gone_from(self, worker: str) -> bool:
        """True if this holder was a process of ``worker`` (this machine's worker) that no
        longer exists: its job cannot be running, whatever its heartbeat says."""
        if self.worker != worker or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


class JobHeartbeat:
    """Refreshes a claimed job's heartbeat from a thread until the context exits."""

    def __init__(self, store: JobStore, job_id: str, holder: str, timeout_seconds: float) -> None:
        self.store = store
        self.job_id = job_id
        self.holder = holder
        self.timeout_seconds = timeout_seconds
        self.lost = threading.Event()
        """Set when another holder took the heartbeat: this run was superseded."""
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"hycas-heartbeat-{job_id[:8]}", daemon=True
        )

    def _beat(self) -> None:
        while not self._stop.wait(self.timeout_seconds / 3):
            try:
                if not self.store.beat(self.job_id, self.holder, self.timeout_seconds):
                    self.lost.set()
            except redis.RedisError as error:  # the store is down: beat again when it is back
                logger.warning(
                    "event=heartbeat_failed job_id=%s error=%s", self.job_id, type(error).__name__
                )

    def __enter__(self) -> JobHeartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(redis.RedisError):  # it expires on its own
            self.store.release_heartbeat(self.job_id, self.holder)
