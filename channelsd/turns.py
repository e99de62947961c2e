"""Bulk work and requests taking turns on the one hub (issue #16).

Reading events, reconciling and building long lists yield to the hub between slices of work,
so that requests get through. `gevent.sleep(0)` does not do that on its own: it queues the
greenlet as a callback, and the hub runs callbacks until none are left, looking at the clock
only every 50 of them. A greenlet that works a millisecond and sleeps(0) again runs up to 50 ms
before the hub next polls its sockets. Measured in the daemon: hub iterations of 100-200 ms
while ingesting at full speed and of 30-45 ms while 20 nodes reconcile after a blip, and each
HTTP request needs one or two of them.

So bulk work pauses with `pause()`. Within one iteration of the loop (from one poll of the
sockets to the next) bulk work has BUDGET seconds in all, or SHARE of the iteration if that is
more. While that share lasts, a pause lets the greenlets that are ready run and comes back
before the next poll (sleep(0)); once it is spent, it waits for the next poll (a timer, which
libev runs after polling) and for an iteration with share left. Every iteration then serves
every socket that is ready, and bulk work gets at least one turn however many greenlets have
bulk work to do; under a crowd of requests it still gets about SHARE of the hub. (Waiting for
the loop to be idle instead starves it: under steady requests the loop is never idle.)
Requests' own long work (a big list's build and write) still yields with sleep(0): it runs
again before bulk work does.
"""

from __future__ import annotations

import time
import weakref

import gevent
from gevent import getcurrent

# Seconds of bulk work in one iteration of the hub's loop, in all.
BUDGET = 0.002
# Bulk work's share of an iteration that took longer than BUDGET (requests had the rest).
SHARE = 0.67
# A bulk loop's turn, when it checks the clock as it goes (pace()).
TURN = 0.0005
# Any positive delay: the timer fires after the loop's next poll of its sockets.
_AFTER_POLL = 1e-6

_clock = time.perf_counter


class _Iteration:
    """The current iteration of one hub's loop: when it started, and the bulk work done in it
    so far (stamped by a prepare watcher, which libev runs just before each poll)."""

    __slots__ = ("started", "spent", "watcher")

    def __init__(self, hub: gevent.hub.Hub) -> None:
        self.started = _clock()
        self.spent = 0.0
        self.watcher = hub.loop.prepare(ref=False)  # (it must not keep the loop alive)
        self.watcher.start(self._next)

    def share_left(self) -> bool:
        """Bulk work has had less than BUDGET, or less than its SHARE, of this iteration."""
        spent = self.spent
        return spent < BUDGET or spent < SHARE * (_clock() - self.started)

    def _next(self) -> None:
        self.started = _clock()
        self.spent = 0.0


_iterations: dict[gevent.hub.Hub, _Iteration] = {}
# When each greenlet last came back from pause().
_turn_from: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _iteration() -> _Iteration:
    hub = gevent.get_hub()
    it = _iterations.get(hub)
    if it is None:
        it = _iterations[hub] = _Iteration(hub)
    return it


def pause() -> None:
    """End this greenlet's turn of bulk work: wait for the hub's next poll, and for an
    iteration with budget left. The turn is counted from when this greenlet last came back
    from pause() or from the iteration's start, whichever is later (a greenlet that blocked
    on its socket since is not charged for the wait)."""
    it = _iteration()
    me = getcurrent()
    it.spent += _clock() - max(_turn_from.get(me, 0.0), it.started)
    # With share left, after the greenlets ready now and before the next poll; else after it.
    gevent.sleep(0 if it.share_left() else _AFTER_POLL)
    while not it.share_left():
        gevent.sleep(_AFTER_POLL)
    _turn_from[me] = _clock()


def poll() -> None:
    """End this turn at the hub's next poll, share left or not: the reply another greenlet
    waits for may be in a socket the hub has not looked at yet."""
    it = _iteration()
    me = getcurrent()
    it.spent += _clock() - max(_turn_from.get(me, 0.0), it.started)
    gevent.sleep(_AFTER_POLL)
    _turn_from[me] = _clock()


def begin() -> None:
    """Start a turn of bulk work that its socket woke (its first since it waited on I/O): wait
    for an iteration with share left, as a turn ending in pause() would. Twenty readers woken
    by one poll would otherwise each take a whole turn before the next poll."""
    it = _iteration()
    while not it.share_left():
        gevent.sleep(_AFTER_POLL)
    _turn_from[getcurrent()] = _clock()


def pace(turn: float | None = None) -> None:
    """pause() once this greenlet's turn has lasted `turn` (TURN) seconds: for loops whose
    steps are too small to pause after each."""
    it = _iteration()
    started = max(_turn_from.get(getcurrent(), 0.0), it.started)
    if _clock() - started >= (TURN if turn is None else turn):
        pause()
