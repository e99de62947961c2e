"""Freed memory given back to the system.

CPython returns freed objects to its own arenas and to glibc's heap, and glibc gives pages back
only from the top of that heap: after a burst (a reconcile of thousands, a day of churn) the
resident size stays near its peak although the objects are gone. In the soak, tracemalloc
inside the daemon found +1.9 MiB of Python memory after 30,000 calls (one resize of the
interpreter's interned-string table), RSS +12.7 MiB. glibc's malloc_trim(0) releases every
free page of the heap; it runs in a worker thread (ctypes lets go of the GIL, so the hub turns
meanwhile), every TRIM_EVERY seconds. Elsewhere than glibc, nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

import gevent

log = logging.getLogger("channelsd.memory")

TRIM_EVERY = 10.0  # seconds


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


class Trimmer:
    """Calls malloc_trim(0) in a worker thread at most every `every` seconds, one at a time."""

    def __init__(self, every: float = TRIM_EVERY, clock: Callable[[], float] = time.monotonic):
        self.every = every
        self.clock = clock
        self._trim = _malloc_trim()
        self._last = clock()
        self._running: gevent.Greenlet | None = None
        self.trims = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def tick(self) -> None:
        """Called from the loop monitor's tick: starts a trim when one is due."""
        if self._trim is None or (self._running is not None and not self._running.ready()):
            return
        now = self.clock()
        if now - self._last < self.every:
            return
        self._last = now
        self._running = gevent.get_hub().threadpool.spawn(self._run)

    def _run(self) -> None:
        assert self._trim is not None
        self._trim(0)
        self.trims += 1
