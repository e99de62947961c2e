"""When a live-event publisher publishes: an interval after the first change it was told of,
and never while a publish of its own is still on its way.

A publish visits the hub (rendering and matching a reconcile's thousands in slices; a crowd's
pushes in turns; the courier's thread sending). Re-armed as soon as it began, the next publish
ran in one of those visits and handed its later events over first: a websocket got a call's
later events before its earlier ones, and an event stream's feed a destroy before the update
it followed (found by an outside attack). The changes told meanwhile wait for the publish on
its way, and go an interval after it began (at once, if it took longer)."""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent


class Cadence:
    """Runs `publish` an interval after `noted()`, one publish at a time."""

    __slots__ = ("interval", "_publish", "_timer", "_running", "_again", "closed")

    def __init__(self, interval: float, publish: Callable[[], None]) -> None:
        self.interval = interval
        self._publish = publish
        self._timer: gevent.Greenlet | None = None
        self._running = False
        self._again = False  # told of a change while a publish was on its way
        self.closed = False

    @property
    def armed(self) -> bool:
        """A publish is due (its timer runs) or on its way."""
        return self._timer is not None or self._running

    def noted(self) -> None:
        """A change is waiting to be published."""
        if self._running:
            self._again = True
        elif self._timer is None and not self.closed:
            self._timer = gevent.spawn_later(self.interval, self.run)

    def run(self) -> None:
        """Publish now (the timer calls this; a test may too). A call made while a publish is
        on its way does nothing itself: that publish arms the next one as it ends."""
        if self._running:
            self._again = True
            return
        timer, self._timer = self._timer, None
        if timer is not None and timer is not gevent.getcurrent():
            timer.kill(block=False)  # (called early: what it would publish goes now)
        self._running = True
        began = time.monotonic()
        try:
            self._publish()
        finally:
            self._running = False
            if self._again and not self.closed:
                self._again = False
                wait = max(0.0, began + self.interval - time.monotonic())
                self._timer = gevent.spawn_later(wait, self.run)

    def close(self) -> None:
        self.closed = True
        self._again = False
        if self._timer is not None:
            self._timer.kill(block=False)
            self._timer = None
