"""Where jobs, batches and input images live: Redis (distributed mode) or memory (embedded).

Both stores keep the same records (:mod:`workers.jobs`) with the same lifetimes:

- an image lives ``image_ttl`` seconds: a job must start before then; it is deleted when its
  job finishes;
- an unfinished job lives ``pending_ttl`` (longer than its image, its run and its result);
  a finished one ``result_ttl`` from the moment it finished;
- a batch lives ``pending_ttl``, so it outlives every one of its jobs.

Updates are read-modify-write under optimistic locking (Redis ``WATCH``; a lock in memory),
so a worker's progress write never overwrites a cancellation requested by the gateway.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import redis

from workers.config import ExecutionSettings
from workers.jobs import BatchRecord, JobRecord

JobChange = Callable[[JobRecord], JobRecord | None]
"""Returns the new record, or ``None`` to leave the stored one as it is."""


def encode_image(image: np.ndarray) -> bytes:
    """A float32 ``[C, H, W]`` array as ``.npy`` bytes (no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(image, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


@dataclass(frozen=True)
class StoreLifetimes:
    """The TTLs of the store's records, in seconds."""

    image_ttl: int
    pending_ttl: int
    result_ttl: int

    @classmethod
    def from_settings(cls, settings: ExecutionSettings) -> StoreLifetimes:
        return cls(
            image_ttl=settings.image_ttl_seconds,
            pending_ttl=settings.pending_ttl_seconds,
            result_ttl=settings.result_ttl_seconds,
        )

    def of_job(self, job: JobRecord) -> int:
        return self.result_ttl if job.status.is_terminal else self.pending_ttl


class JobStore(Protocol):
    lifetimes: StoreLifetimes

    def save_image(self, key: str, image: np.ndarray) -> None: ...

    def load_image(self, key: str) -> np.ndarray | None: ...

    def delete_image(self, key: str) -> None: ...

    def create_job(self, job: JobRecord) -> None: ...

    def get_job(self, job_id: str) -> JobRecord | None: ...

    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]: ...

    def update_job(self, job_id: str, change: JobChange) -> JobRecord | None:
        """Apply ``change`` atomically; the stored record after it (``None``: no such job)."""
        ...

    def create_batch(self, batch: BatchRecord) -> None: ...

    def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    def ping(self) -> None:
        """Raise when the store cannot be reached."""
        ...


class RedisJobStore:
    """Records as JSON strings, images as ``.npy`` bytes, each key with its TTL."""

    def __init__(self, client: redis.Redis, prefix: str, lifetimes: StoreLifetimes) -> None:
        self.client = client
        self.prefix = prefix
        self.lifetimes = lifetimes

    @classmethod
    def from_settings(cls, settings: ExecutionSettings) -> RedisJobStore:
        if settings.redis_url is None:
            raise ValueError(
                "the Redis store needs HYCAS_REDIS_URL (e.g. redis://127.0.0.1:6379/0)"
            )
        client = redis.Redis.from_url(settings.redis_url)
        return cls(client, settings.key_prefix, StoreLifetimes.from_settings(settings))

    def _job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _image_key(self, key: str) -> str:
        return f"{self.prefix}image:{key}"

    def _batch_key(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}"

    def save_image(self, key: str, image: np.ndarray) -> None:
        self.client.set(self._image_key(key), encode_image(image), ex=self.lifetimes.image_ttl)

    def load_image(self, key: str) -> np.ndarray | None:
        data = self.client.get(self._image_key(key))
        return None if data is None else decode_image(data)

    def delete_image(self, key: str) -> None:
        self.client.delete(self._image_key(key))

    def create_job(self, job: JobRecord) -> None:
        self.client.set(
            self._job_key(job.id), job.model_dump_json(), ex=self.lifetimes.of_job(job), nx=True
        )

    def get_job(self, job_id: str) -> JobRecord | None:
        data = self.client.get(self._job_key(job_id))
        return None if data is None else JobRecord.model_validate_json(data)

    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        if not job_ids:
            return []
        values = self.client.mget([self._job_key(job_id) for job_id in job_ids])
        return [None if v is None else JobRecord.model_validate_json(v) for v in values]

    def update_job(self, job_id: str, change: JobChange) -> JobRecord | None:
        key = self._job_key(job_id)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    data = pipe.get(key)
                    if data is None:
                        return None
                    current = JobRecord.model_validate_json(data)
                    changed = change(current)
                    if changed is None:
                        pipe.unwatch()
                        return current
                    pipe.multi()
                    pipe.set(key, changed.model_dump_json(), ex=self.lifetimes.of_job(changed))
                    pipe.execute()
                    return changed
                except redis.WatchError:
                    continue

    def create_batch(self, batch: BatchRecord) -> None:
        self.client.set(
            self._batch_key(batch.id),
            batch.model_dump_json(),
            ex=self.lifetimes.pending_ttl,
            nx=True,
        )

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        data = self.client.get(self._batch_key(batch_id))
        return None if data is None else BatchRecord.model_validate_json(data)

    def ping(self) -> None:
        self.client.ping()


class InMemoryJobStore:
    """The embedded mode's store: the same records and lifetimes, in this process."""

    SWEEP_INTERVAL_SECONDS = 60.0
    """Expired entries are dropped when read, and all at once at most this often."""

    def __init__(self, lifetimes: StoreLifetimes, clock: Callable[[], float] = time.monotonic):
        self.lifetimes = lifetimes
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, object]] = {}
        self._last_sweep = clock()

    def _put(self, key: str, value: object, ttl: int) -> None:
        now = self._clock()
        if now - self._last_sweep >= self.SWEEP_INTERVAL_SECONDS:
            self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
            self._last_sweep = now
        self._entries[key] = (now + ttl, value)

    def _get(self, key: str) -> object | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        return value

    def save_image(self, key: str, image: np.ndarray) -> None:
        with self._lock:
            stored = np.array(image, dtype=np.float32, copy=True)
            self._put(f"image:{key}", stored, self.lifetimes.image_ttl)

    def load_image(self, key: str) -> np.ndarray | None:
        with self._lock:
            image = self._get(f"image:{key}")
            return None if image is None else np.array(image, copy=True)

    def delete_image(self, key: str) -> None:
        with self._lock:
            self._entries.pop(f"image:{key}", None)

    def create_job(self, job: JobRecord) -> None:
        with self._lock:
            if self._get(f"job:{job.id}") is None:
                self._put(f"job:{job.id}", job, self.lifetimes.of_job(job))

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._get(f"job:{job_id}")  # type: ignore[return-value]

    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        with self._lock:
            return [self._get(f"job:{job_id}") for job_id in job_ids]  # type: ignore[misc]

    def update_job(self, job_id: str, change: JobChange) -> JobRecord | None:
        with self._lock:
            current = self._get(f"job:{job_id}")
            if current is None:
                return None
            changed = change(current)  # type: ignore[arg-type]
            if changed is None:
                return current  # type: ignore[return-value]
            self._put(f"job:{job_id}", changed, self.lifetimes.of_job(changed))
            return changed

    def create_batch(self, batch: BatchRecord) -> None:
        with self._lock:
            self._put(f"batch:{batch.id}", batch, self.lifetimes.pending_ttl)

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        with self._lock:
            return self._get(f"batch:{batch_id}")  # type: ignore[return-value]

    def ping(self) -> None:
        """Always reachable: it lives in this process."""
