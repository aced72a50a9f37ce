"""Where jobs, batches and input images live: Redis (distributed mode) or memory (embedded).

Both stores keep the same records (:mod:`workers.jobs`) with the same lifetimes:

- an image lives ``image_ttl`` seconds: a job must start before then; it is deleted when its
  job finishes;
- an unfinished job lives ``pending_ttl`` (longer than its image, its run and its result);
  a finished one ``result_ttl`` from the moment it finished;
- a batch lives ``pending_ttl``, so it outlives every one of its jobs.

Updates are read-modify-write under optimistic locking (Redis ``WATCH``; a lock in memory),
so a worker's progress write never overwrites a cancellation requested by the gateway.

For reliability (:mod:`workers.reaper`, :mod:`workers.admission`) a store also keeps:

- the index of unfinished jobs (id → weight in samples and owner) with its totals, updated in
  the same transaction as the job's creation and its terminal write: the backlog that
  admission control counts and the list the reaper inspects;
- a heartbeat per running job (its runner's holder token, with a TTL), set in the same
  transaction as the claim and refreshed by the runner;
- a count of terminal writes per job (living as long as the result): 1, or a duplicate.
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

from workers.admission import BacklogLimits, BacklogUsage, refusal
from workers.config import ExecutionSettings
from workers.jobs import BatchRecord, JobRecord, JobStatus

JobChange = Callable[[JobRecord], JobRecord | None]
"""Returns the new record, or ``None`` to leave the stored one as it is."""

JobClaim = Callable[[JobRecord, str | None], JobRecord | None]
"""Like :data:`JobChange`, also given the holder of the job's live heartbeat (or ``None``)."""


def image_to_npy(image: np.ndarray) -> bytes:
    """A float32 ``[C, H, W]`` array as ``.npy`` bytes (no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(image, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def image_from_npy(data: bytes) -> np.ndarray:
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
    in_memory: bool
    """True when a read is a dictionary lookup in this process (no I/O): an async caller may
    read on its event loop instead of a worker thread."""

    def save_image(self, key: str, image: np.ndarray) -> None: ...

    def load_image(self, key: str) -> np.ndarray | None: ...

    def delete_image(self, key: str) -> None: ...

    def create_job(self, job: JobRecord) -> None: ...

    def get_job(self, job_id: str) -> JobRecord | None: ...

    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]: ...

    def update_job(
        self, job_id: str, change: JobChange, *, drop_heartbeat: bool = False
    ) -> JobRecord | None:
        """Apply ``change`` atomically; the stored record after it (``None``: no such job).

        A change to a terminal status also leaves the backlog index and counts one result
        write; ``drop_heartbeat`` deletes the job's heartbeat in the same transaction."""
        ...

    def update_unheld_job(self, job_id: str, change: JobChange) -> JobRecord | None:
        """Like :meth:`update_job`, applied only while the job has no live heartbeat."""
        ...

    def admit_jobs(self, jobs: Sequence[JobRecord], limits: BacklogLimits) -> None:
        """Create all ``jobs`` (queued, one owner) atomically, or none of them and raise
        :class:`workers.admission.BacklogFull` if they would push the backlog past ``limits``."""
        ...

    def backlog(self, owner: str | None = None) -> BacklogUsage: ...

    def active_job_ids(self) -> list[str]:
        """The ids in the index of unfinished jobs."""
        ...

    def forget_active(self, job_id: str) -> None:
        """Take a job that no longer exists (expired) out of the backlog index."""
        ...

    def claim_job(
        self, job_id: str, claim: JobClaim, holder: str, ttl_seconds: float
    ) -> JobRecord | None:
        """Apply ``claim`` atomically; if it makes the job running, ``holder``'s heartbeat is
        set in the same transaction (so no claim is ever visible without a live heartbeat)."""
        ...

    def beat(self, job_id: str, holder: str, ttl_seconds: float) -> bool:
        """Refresh ``holder``'s heartbeat; refused (``False``) if another holder has it."""
        ...

    def release_heartbeat(self, job_id: str, holder: str) -> None: ...

    def heartbeat_holders(self, job_ids: Sequence[str]) -> list[str | None]: ...

    def result_writes(self, job_id: str) -> int:
        """Terminal writes of the job so far (while its result lives)."""
        ...

    def acquire_lock(self, name: str, ttl_seconds: float) -> bool:
        """Hold the lock ``name`` for ``ttl_seconds`` unless someone holds it now."""
        ...

    def create_batch(self, batch: BatchRecord) -> None: ...

    def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    def ping(self) -> None:
        """Raise when the store cannot be reached."""
        ...


def index_entry(job: JobRecord) -> str:
    """A job's entry in the backlog index: its weight in samples and its owner."""
    return f"{job.samples_weight} {job.owner or ''}"


_ADD_JOB = """
-- KEYS: job, index, totals. ARGV: id, record, ttl, index entry, samples, owner.
if not redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3], 'NX') then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('HINCRBY', KEYS[3], 'jobs', 1)
redis.call('HINCRBY', KEYS[3], 'samples', ARGV[5])
if ARGV[6] ~= '' then
  redis.call('HINCRBY', KEYS[3], 'jobs:' .. ARGV[6], 1)
  redis.call('HINCRBY', KEYS[3], 'samples:' .. ARGV[6], ARGV[5])
end
return 1
"""

_RELEASE_JOB = """
-- KEYS: index, totals. ARGV: id. Takes the job's weight out of the totals once.
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local samples, owner = string.match(entry, '^(%d+) (.*)$')
redis.call('HINCRBY', KEYS[2], 'jobs', -1)
redis.call('HINCRBY', KEYS[2], 'samples', '-' .. samples)
if owner ~= '' then
  if redis.call('HINCRBY', KEYS[2], 'jobs:' .. owner, -1) <= 0 then
    redis.call('HDEL', KEYS[2], 'jobs:' .. owner, 'samples:' .. owner)
  else
    redis.call('HINCRBY', KEYS[2], 'samples:' .. owner, '-' .. samples)
  end
end
return 1
"""

_BEAT = """
-- KEYS: heartbeat. ARGV: holder, ttl ms. Only the holder (or anyone, if none) refreshes it.
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE_HEARTBEAT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class JobWrite:
    """What one transaction writes: the new record and, with it, the job's heartbeat and its
    place in the index of unfinished jobs."""

    record: JobRecord
    ends_job: bool
    """The record becomes terminal now: leave the index and count a terminal write."""
    lease: tuple[str, float] | None
    """Set the heartbeat to this holder for this many seconds."""
    drops_heartbeat: bool
    """Delete the heartbeat (when no lease is set)."""


JobWritePlan = Callable[[JobRecord, str | None], JobWrite | None]
"""Given the stored record and its heartbeat's holder, what to write (``None``: nothing)."""


class _JobTransactions:
    """The job updates both stores offer. Each is one call of the store's own ``_apply``,
    which reads the record and its heartbeat's holder atomically, asks the plan what to
    write, and writes it (record, heartbeat, index) in the same transaction."""

    _apply: Callable[[str, JobWritePlan], JobRecord | None]

    def _transact(
        self,
        job_id: str,
        change: JobClaim,
        *,
        lease: tuple[str, float] | None = None,
        drop_heartbeat: bool = False,
    ) -> JobRecord | None:
        def plan(current: JobRecord, holder: str | None) -> JobWrite | None:
            changed = change(current, holder)
            if changed is None:
                return None
            running = lease is not None and changed.status is JobStatus.RUNNING
            return JobWrite(
                record=changed,
                ends_job=changed.status.is_terminal and not current.status.is_terminal,
                lease=lease if running else None,
                drops_heartbeat=not running and (drop_heartbeat or changed.status.is_terminal),
            )

        return self._apply(job_id, plan)

    def update_job(
        self, job_id: str, change: JobChange, *, drop_heartbeat: bool = False
    ) -> JobRecord | None:
        return self._transact(
            job_id, lambda job, _holder: change(job), drop_heartbeat=drop_heartbeat
        )

    def update_unheld_job(self, job_id: str, change: JobChange) -> JobRecord | None:
        return self._transact(job_id, lambda job, holder: change(job) if holder is None else None)

    def claim_job(
        self, job_id: str, claim: JobClaim, holder: str, ttl_seconds: float
    ) -> JobRecord | None:
        return self._transact(job_id, claim, lease=(holder, ttl_seconds))


class RedisJobStore(_JobTransactions):
    """Records as JSON strings, images as ``.npy`` bytes, each key with its TTL."""

    in_memory = False

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
        client = redis.Redis.from_url(settings.redis_url, **(settings.redis_tls_options or {}))
        return cls(client, settings.key_prefix, StoreLifetimes.from_settings(settings))

    def _job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _image_key(self, key: str) -> str:
        return f"{self.prefix}image:{key}"

    def _batch_key(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}"

    def save_image(self, key: str, image: np.ndarray) -> None:
        self.client.set(self._image_key(key), image_to_npy(image), ex=self.lifetimes.image_ttl)

    def load_image(self, key: str) -> np.ndarray | None:
        data = self.client.get(self._image_key(key))
        return None if data is None else image_from_npy(data)

    def delete_image(self, key: str) -> None:
        self.client.delete(self._image_key(key))

    @property
    def _index_key(self) -> str:
        return f"{self.prefix}active"

    @property
    def _totals_key(self) -> str:
        return f"{self.prefix}backlog"

    def _heartbeat_key(self, job_id: str) -> str:
        return f"{self.prefix}heartbeat:{job_id}"

    def _writes_key(self, job_id: str) -> str:
        return f"{self.prefix}result_writes:{job_id}"

    def _add_job(self, client: redis.Redis, job: JobRecord) -> None:
        client.eval(
            _ADD_JOB,
            3,
            self._job_key(job.id),
            self._index_key,
            self._totals_key,
            job.id,
            job.model_dump_json(),
            self.lifetimes.of_job(job),
            index_entry(job),
            job.samples_weight,
            job.owner or "",
        )

    def create_job(self, job: JobRecord) -> None:
        self._add_job(self.client, job)

    def admit_jobs(self, jobs: Sequence[JobRecord], limits: BacklogLimits) -> None:
        owner = jobs[0].owner if jobs else None
        samples = sum(job.samples_weight for job in jobs)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self._totals_key)
                    usage = self._read_backlog(pipe, owner)
                    full = refusal(usage, len(jobs), samples, owner, limits)
                    if full is not None:
                        pipe.unwatch()
                        raise full
                    pipe.multi()
                    for job in jobs:
                        self._add_job(pipe, job)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def _read_backlog(self, client: redis.Redis, owner: str | None) -> BacklogUsage:
        fields = ["jobs", "samples", f"jobs:{owner or ''}", f"samples:{owner or ''}"]
        values = [int(v or 0) for v in client.hmget(self._totals_key, fields)]
        if owner is None:
            values[2:] = [0, 0]
        return BacklogUsage(*values)

    def backlog(self, owner: str | None = None) -> BacklogUsage:
        return self._read_backlog(self.client, owner)

    def active_job_ids(self) -> list[str]:
        return [key.decode() for key in self.client.hkeys(self._index_key)]

    def forget_active(self, job_id: str) -> None:
        if not self.client.exists(self._job_key(job_id)):
            self.client.eval(_RELEASE_JOB, 2, self._index_key, self._totals_key, job_id)

    def get_job(self, job_id: str) -> JobRecord | None:
        data = self.client.get(self._job_key(job_id))
        return None if data is None else JobRecord.model_validate_json(data)

    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        if not job_ids:
            return []
        values = self.client.mget([self._job_key(job_id) for job_id in job_ids])
        return [None if v is None else JobRecord.model_validate_json(v) for v in values]

    def _apply(self, job_id: str, plan: JobWritePlan) -> JobRecord | None:
        key = self._job_key(job_id)
        heartbeat = self._heartbeat_key(job_id)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key, heartbeat)
                    data = pipe.get(key)
                    if data is None:
                        return None
                    current = JobRecord.model_validate_json(data)
                    holder = pipe.get(heartbeat)
                    write = plan(current, None if holder is None else holder.decode())
                    if write is None:
                        pipe.unwatch()
                        return current
                    changed = write.record
                    pipe.multi()
                    pipe.set(key, changed.model_dump_json(), ex=self.lifetimes.of_job(changed))
                    if write.ends_job:
                        pipe.eval(_RELEASE_JOB, 2, self._index_key, self._totals_key, job_id)
                        pipe.incr(self._writes_key(job_id))
                        pipe.expire(self._writes_key(job_id), self.lifetimes.result_ttl)
                    if write.lease is not None:
                        pipe.set(heartbeat, write.lease[0], px=max(1, int(write.lease[1] * 1000)))
                    elif write.drops_heartbeat:
                        pipe.delete(heartbeat)
                    pipe.execute()
                    return changed
                except redis.WatchError:
                    continue

    def beat(self, job_id: str, holder: str, ttl_seconds: float) -> bool:
        ttl_ms = max(1, int(ttl_seconds * 1000))
        return bool(self.client.eval(_BEAT, 1, self._heartbeat_key(job_id), holder, ttl_ms))

    def release_heartbeat(self, job_id: str, holder: str) -> None:
        self.client.eval(_RELEASE_HEARTBEAT, 1, self._heartbeat_key(job_id), holder)

    def heartbeat_holders(self, job_ids: Sequence[str]) -> list[str | None]:
        if not job_ids:
            return []
        values = self.client.mget([self._heartbeat_key(job_id) for job_id in job_ids])
        return [None if v is None else v.decode() for v in values]

    def result_writes(self, job_id: str) -> int:
        return int(self.client.get(self._writes_key(job_id)) or 0)

    def acquire_lock(self, name: str, ttl_seconds: float) -> bool:
        ttl_ms = max(1, int(ttl_seconds * 1000))
        return bool(self.client.set(f"{self.prefix}lock:{name}", "1", nx=True, px=ttl_ms))

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


class InMemoryJobStore(_JobTransactions):
    """The embedded mode's store: the same records and lifetimes, in this process."""

    in_memory = True

    SWEEP_INTERVAL_SECONDS = 60.0
    """Expired entries are dropped when read, and all at once at most this often."""

    def __init__(self, lifetimes: StoreLifetimes, clock: Callable[[], float] = time.monotonic):
        self.lifetimes = lifetimes
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, object]] = {}
        self._active: dict[str, JobRecord] = {}
        """Unfinished jobs as they were created: the backlog index."""
        self._last_sweep = clock()

    def _put(self, key: str, value: object, ttl: float) -> None:
        now = self._clock()
        if now - self._last_sweep >= self.SWEEP_INTERVAL_SECONDS:
            self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
            self._active = {k: j for k, j in self._active.items() if f"job:{k}" in self._entries}
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

    def _add_job(self, job: JobRecord) -> None:
        if self._get(f"job:{job.id}") is None:
            self._put(f"job:{job.id}", job, self.lifetimes.of_job(job))
            self._active[job.id] = job

    def create_job(self, job: JobRecord) -> None:
        with self._lock:
            self._add_job(job)

    def admit_jobs(self, jobs: Sequence[JobRecord], limits: BacklogLimits) -> None:
        owner = jobs[0].owner if jobs else None
        samples = sum(job.samples_weight for job in jobs)
        with self._lock:
            full = refusal(self._backlog(owner), len(jobs), samples, owner, limits)
            if full is not None:
                raise full
            for job in jobs:
                self._add_job(job)

    def _backlog(self, owner: str | None) -> BacklogUsage:
        mine = [job for job in self._active.values() if owner is not None and job.owner == owner]
        return BacklogUsage(
            jobs=len(self._active),
            samples=sum(job.samples_weight for job in self._active.values()),
            key_jobs=len(mine),
            key_samples=sum(job.samples_weight for job in mine),
        )

    def backlog(self, owner: str | None = None) -> BacklogUsage:
        with self._lock:
            return self._backlog(owner)

    def active_job_ids(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def forget_active(self, job_id: str) -> None:
        with self._lock:
            if self._get(f"job:{job_id}") is None:
                self._active.pop(job_id, None)

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._get(f"job:{job_id}")  # type: ignore[return-value]

    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        with self._lock:
            return [self._get(f"job:{job_id}") for job_id in job_ids]  # type: ignore[misc]

    def _apply(self, job_id: str, plan: JobWritePlan) -> JobRecord | None:
        with self._lock:
            current: JobRecord | None = self._get(f"job:{job_id}")  # type: ignore[assignment]
            if current is None:
                return None
            write = plan(current, self._get(f"heartbeat:{job_id}"))  # type: ignore[arg-type]
            if write is None:
                return current
            changed = write.record
            self._put(f"job:{job_id}", changed, self.lifetimes.of_job(changed))
            if write.ends_job:
                self._active.pop(job_id, None)
                writes = self._get(f"writes:{job_id}") or 0
                self._put(f"writes:{job_id}", writes + 1, self.lifetimes.result_ttl)  # type: ignore[operator]
            if write.lease is not None:
                self._put(f"heartbeat:{job_id}", write.lease[0], write.lease[1])
            elif write.drops_heartbeat:
                self._entries.pop(f"heartbeat:{job_id}", None)
            return changed

    def beat(self, job_id: str, holder: str, ttl_seconds: float) -> bool:
        with self._lock:
            if self._get(f"heartbeat:{job_id}") not in (None, holder):
                return False
            self._put(f"heartbeat:{job_id}", holder, ttl_seconds)
            return True

    def release_heartbeat(self, job_id: str, holder: str) -> None:
        with self._lock:
            if self._get(f"heartbeat:{job_id}") == holder:
                del self._entries[f"heartbeat:{job_id}"]

    def heartbeat_holders(self, job_ids: Sequence[str]) -> list[str | None]:
        with self._lock:
            return [self._get(f"heartbeat:{job_id}") for job_id in job_ids]  # type: ignore[misc]

    def result_writes(self, job_id: str) -> int:
        with self._lock:
            return self._get(f"writes:{job_id}") or 0  # type: ignore[return-value]

    def acquire_lock(self, name: str, ttl_seconds: float) -> bool:
        with self._lock:
            if self._get(f"lock:{name}") is not None:
                return False
            self._put(f"lock:{name}", True, ttl_seconds)
            return True

    def create_batch(self, batch: BatchRecord) -> None:
        with self._lock:
            self._put(f"batch:{batch.id}", batch, self.lifetimes.pending_ttl)

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        with self._lock:
            return self._get(f"batch:{batch_id}")  # type: ignore[return-value]

    def ping(self) -> None:
        """Always reachable: it lives in this process."""
