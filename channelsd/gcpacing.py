"""When the interpreter's cycle collector walks the whole process (issue #16).

A full collection visits every tracked object and every field of each: a channel row is one
object with ~40 fields, so with 10,000 live channels it is a 16 ms stall on a quiet machine and
20-60 ms under load, every request in flight waiting behind it. CPython starts one whenever the
objects that outlived two younger collections reach a quarter of the long-lived ones, which under
churn beside 10,000 channels is every few seconds (the read benchmark: 7 in 90 s, 8-19 ms each;
the network blip: one in the two seconds measured, the API's p99 over its target).

Nothing the table holds needs the cycle collector: a row, its ending and its recording are freed
by reference counting the moment the channel leaves the table (tests/test_gcpacing.py holds the
table to that). What a full collection finds is cyclic garbage that survived the young
collections (a closed connection's greenlets, a traceback kept by a handler): a few hundred
objects. That may wait. So, once the daemon runs, the young generations stay automatic and full
collections are taken off the allocation path: the loop monitor runs one every FULL_EVERY
seconds. What existed at start (modules, the Flask app, schemas: ~45,000 objects) is frozen, so
no collection walks it again.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

# Seconds between full collections: cyclic garbage lives at most this long past its death.
FULL_EVERY = 60.0
# A threshold the count of young collections never reaches: no full collection on its own.
_NEVER = 2**30


class GcPacer:
    """Full collections every `every` seconds, from `tick`, once `take_over` was called.

    Process-wide state: only `channelsd run` takes over (tests build many daemons in one
    process and leave the collector as it was)."""

    def __init__(
        self,
        every: float = FULL_EVERY,
        clock: Callable[[], float] = time.monotonic,
        on_full: Callable[[float, int], None] | None = None,
    ) -> None:
        self.every = every
        self.clock = clock
        self.on_full = on_full  # (seconds it took, objects collected)
        self.active = False
        self.collections = 0
        self._due = 0.0
        self._saved: tuple[int, int, int] | None = None

    def take_over(self) -> None:
        """Freeze what exists and stop the interpreter starting full collections itself."""
        if self.active:
            return
        gc.freeze()
        self._saved = gc.get_threshold()
        young, older, _ = self._saved
        gc.set_threshold(young, older, _NEVER)
        self.active = True
        self._due = self.clock() + self.every

    def release(self) -> None:
        """The interpreter's own policy again (what was frozen stays frozen)."""
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
        self.active = False

    def tick(self) -> None:
        """Called from the loop monitor's tick: a full collection when one is due."""
        if not self.active:
            return
        now = self.clock()
        if now < self._due:
            return
        self._due = now + self.every
        self.collect()

    def collect(self) -> int:
        started = time.perf_counter()
        found = gc.collect(2)
        self.collections += 1
        if self.on_full is not None:
            self.on_full(time.perf_counter() - started, found)
        return found
