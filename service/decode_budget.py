"""The memory that image decodes in flight may hold together: a semaphore counted in bytes.

A decode reserves, before it allocates anything large, the bytes its stages will hold at
once (estimated from the image's header: pixels × channels × bytes per sample at each stage;
see :mod:`service.imaging`). It waits until they fit beside the decodes already running,
in arrival order, so a large image is neither refused because small ones keep arriving nor
a lock that makes small images wait while there is room for them. An image that alone needs
more than the whole budget is refused at once (413).

After a large decode the freed heap is handed back to the operating system: glibc keeps
freed blocks below its mmap threshold in its arenas, and a burst of large images would
otherwise leave the gateway's RSS high long after.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import ImageTooLarge

MiB = 1024 * 1024
TRIM_AFTER_BYTES = 32 * MiB
"""Decodes that reserved at least this much hand freed memory back to the OS when done."""


def _load_malloc_trim():  # type: ignore[no-untyped-def]
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_freed_memory() -> None:
    """Return the heap's free pages to the OS (glibc ``malloc_trim``; a no-op elsewhere)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class DecodeBudget:
    """``capacity`` bytes shared by concurrent decodes; :meth:`reserve` waits for a share."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._in_use = 0
        self._condition = threading.Condition()
        self._queue: deque[int] = deque()
        self._tickets = itertools.count()

    @property
    def in_use(self) -> int:
        with self._condition:
            return self._in_use

    @contextmanager
    def reserve(self, nbytes: int, what: str) -> Iterator[None]:
        """Hold ``nbytes`` of the budget while the block runs; ``what`` names the image in the
        413 given when ``nbytes`` exceeds the whole budget."""
        if nbytes > self.capacity:
            raise ImageTooLarge(
                f"decoding {what} needs about {nbytes / MiB:,.0f} MiB (pixels × channels × "
                f"bytes per sample at each step); the gateway decodes at most "
                f"{self.capacity / MiB:,.0f} MiB at once (HYCAS_MAX_DECODE_BYTES); send a "
                "smaller image"
            )
        with self._condition:
            ticket = next(self._tickets)
            self._queue.append(ticket)
            while self._queue[0] != ticket or self._in_use + nbytes > self.capacity:
                self._condition.wait()
            self._queue.popleft()
            self._in_use += nbytes
            self._condition.notify_all()  # the next in line may fit as well
        try:
            yield
        finally:
            with self._condition:
                self._in_use -= nbytes
                self._condition.notify_all()
            if nbytes >= TRIM_AFTER_BYTES:
                release_freed_memory()
