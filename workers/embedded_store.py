"""The embedded mode's store, which wakes the requests waiting for a job when it ends.

In embedded mode the job threads and the requests that wait for their jobs (``?wait=``) share
one process, so a waiting request need not poll: :class:`SignallingJobStore` is the in-memory
store whose job updates tell :class:`JobEndSignals` when a job reaches an end state, and the
waiting request (on the gateway's event loop) wakes at once. A request still reads the stored
job when it wakes (the signal carries no state), and still rereads it at least every
:data:`FALLBACK_POLL_SECONDS`, so a missed signal can only delay an answer, never change it.
Distributed mode (the Redis store, jobs in other processes) keeps polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import TypeVar

from workers.jobs import JobRecord
from workers.store import InMemoryJobStore, JobWritePlan, StoreLifetimes

FALLBACK_POLL_SECONDS = 0.5
"""The longest a waiting request goes without rereading its jobs, signal or not."""

State = TypeVar("State")


class JobEndSignals:
    """Wakes waiters on event loops when jobs they watch end; ``ended`` may be called from
    any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    @contextlib.contextmanager
    def watching(self, job_ids: Collection[str]) -> Iterator[asyncio.Event]:
        """An event of the running loop, set when any of ``job_ids`` ends while the block runs.

        Read the jobs after entering the block: an end written before it is then seen by the
        read, one written after it sets the event."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            for job_id in job_ids:
                self._waiters.setdefault(job_id, []).append(waiter)
        try:
            yield waiter[1]
        finally:
            with self._lock:
                for job_id in job_ids:
                    waiters = self._waiters.get(job_id)
                    if waiters is not None:
                        waiters.remove(waiter)
                        if not waiters:
                            del self._waiters[job_id]

    def ended(self, job_id: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(job_id, ()))
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits
                loop.call_soon_threadsafe(event.set)


async def wait_until(
    signals: JobEndSignals,
    job_ids: Collection[str],
    read: Callable[[], State],
    done: Callable[[State], bool],
    seconds: float,
) -> State:
    """``read()`` once ``done`` holds for it, or as it is after ``seconds``: read again when
    one of ``job_ids`` ends and at least every :data:`FALLBACK_POLL_SECONDS`."""
    deadline = time.monotonic() + seconds
    with signals.watching(job_ids) as ended:
        state = read()
        while not done(state):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), min(remaining, FALLBACK_POLL_SECONDS))
            ended.clear()
            state = read()
    return state


class SignallingJobStore(InMemoryJobStore):
    """:class:`workers.store.InMemoryJobStore` that signals :attr:`job_ends` after every
    update that leaves a job in an end state (the runner's end, a cancel while queued, a
    claim that ends the job)."""

    def __init__(
        self, lifetimes: StoreLifetimes, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(lifetimes, clock)
        self.job_ends = JobEndSignals()

    def _apply(self, job_id: str, plan: JobWritePlan) -> JobRecord | None:
        # Every job update (an update, an update of an unheld job, a claim) is one _apply.
        job = super()._apply(job_id, plan)
        if job is not None and job.status.is_terminal:
            self.job_ends.ended(job_id)
        return job
