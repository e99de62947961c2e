"""Freed memory given back to the system.

CPython returns freed objects to its own arenas and to glibc's heap, and glibc gives pages back
only from the top of that heap: after a burst (a reconcile of thousands, a day of churn) the
resident size stays near its peak although the objects are gone. In the soak, tracemalloc
inside the daemon found +1.9 MiB of Python memory after 30,000 calls (one resize of the
interpreter's interned-string table), RSS +12.7 MiB. glibc's malloc_trim(0) releases every
free page of the heap; it runs in a worker thread (ctypes lets go of the GIL).

The hub still waits for it: malloc_trim walks the heap's free chunks holding the heap's lock,
and the hub's next malloc waits for the lock. Beside 10,000 channels, ingesting, the hub
stopped for 13-85 ms at each trim, every 10 s, and 16 portals polling their account lists
all waited (BENCHMARKS.md, issue #16). So a trim comes every TRIM_EVERY seconds only while
the process is quiet (less than QUIET of a core since the last tick, as after the calls
stop), and every BUSY_TRIM_EVERY seconds while it is busy: a burst freed under load is given
back within a minute, with a sixth of the pauses. Elsewhere than glibc, nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

import gevent

log = logging.getLogger("channelsd.memory")

TRIM_EVERY = 10.0  # seconds between trims while the process is quiet
BUSY_TRIM_EVERY = 60.0  # ... and while it is busy
QUIET = 0.2  # of a core, over the last tick: a pause of the hub then delays little


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


class Trimmer:
    """Calls malloc_trim(0) in a worker thread, one at a time: `every` seconds after the last
    one once a tick finds the process quiet, `busy_every` seconds after it in any case."""

    def __init__(
        self,
        every: float = TRIM_EVERY,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
        busy_every: float = BUSY_TRIM_EVERY,
    ) -> None:
        self.every = every
        self.busy_every = busy_every
        self.clock = clock
        self.cpu = cpu
        self._trim = _malloc_trim()
        self._last = clock()
        self._looked = (self._last, cpu())  # the last tick: (clock, CPU seconds)
        self._running: gevent.Greenlet | None = None
        self.trims = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def tick(self) -> None:
        """Called from the loop monitor's tick: starts a trim when one is due."""
        now, cpu = self.clock(), self.cpu()
        (then, cpu_then), self._looked = self._looked, (now, cpu)
        if self._trim is None or (self._running is not None and not self._running.ready()):
            return
        since = now - self._last
        if since < self.every:
            return
        quiet = cpu - cpu_then <= QUIET * (now - then)
        if not quiet and since < self.busy_every:
            return
        self._last = now
        self._running = gevent.get_hub().threadpool.spawn(self._run)

    def _run(self) -> None:
        assert self._trim is not None
        self._trim(0)
        self.trims += 1
