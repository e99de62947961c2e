"""Bulk work and requests taking turns on the one hub (issue #16).

Reading events, reconciling and building long lists yield to the hub between slices of work,
so that requests get through. `gevent.sleep(0)` does not do that on its own: it queues the
greenlet as a callback, and the hub runs callbacks until none are left, looking at the clock
only every 50 of them. A greenlet that works a millisecond and sleeps(0) again runs up to 50 ms
before the hub next polls its sockets. Measured in the daemon: hub iterations of 100-200 ms
while ingesting at full speed and of 30-45 ms while 20 nodes reconcile after a blip, and each
HTTP request needs one or two of them.

So bulk work pauses with `pause()`. Within one iteration of the loop (from the return of one
poll of the sockets to the next poll) bulk work has BUDGET seconds in all, or SHARE of the
iteration if that is more. While that share lasts, a pause lets the greenlets that are ready
run and comes back before the next poll (sleep(0)); once it is spent, it waits for the next
poll and for an iteration with share left. Every iteration then serves every socket that is
ready, and bulk work gets at least one turn however many greenlets have bulk work to do;
under a crowd of requests it still gets about SHARE of the hub. (Waiting for the loop to be
idle instead starves it: under steady requests the loop is never idle.) Requests' own long
work (a big list's build and write) still yields with sleep(0): it runs again before bulk
work does.

Bulk work that finds the share spent waits in line (`_Iteration.line`), first come first
served, and one greenlet is let go at a time: after the poll, then each time the one let go
has ended its turn or blocked, while the share lasts. Each waiting greenlet used to ask again
after every poll (a timer of its own, a switch, a look at the clock): with 20 nodes' readers
waiting, that was ~10,000 wake-ups a second, 5 % of the hub, for turns they did not get.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
from gevent import getcurrent
from gevent.hub import Waiter

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
    so far (stamped by a check watcher, which libev runs as each poll returns); and the
    bulk work waiting in line for a turn."""

    __slots__ = ("started", "spent", "polls", "watcher", "line", "letting", "loop", "timer")

    def __init__(self, hub: gevent.hub.Hub) -> None:
        self.started = _clock()
        self.spent = 0.0
        self.polls = 0
        # Stamped as the poll returns, before the timers and the sockets it woke run: the time
        # an idle poll blocked is nobody's (stamped before it, as until 2026-12-04, it was
        # counted as the iteration's, so that readers woken by a slow poll found most of a
        # share left and took a turn each before a request woken with them; and a greenlet
        # that had waited on its socket was charged the wait). (It must not keep the loop
        # alive.)
        self.watcher = hub.loop.check(ref=False)
        self.watcher.start(self._next)
        # Greenlets waiting for a turn, oldest first, each as what the hub switches to.
        self.line: deque[Waiter] = deque()
        # A look at the line is due (a callback queued, or the timer after the poll armed):
        # never more than one, however many greenlets join.
        self.letting = False
        self.loop = hub.loop
        self.timer = hub.loop.timer(_AFTER_POLL)

    def share_left(self) -> bool:
        """Bulk work has had less than BUDGET, or less than its SHARE, of this iteration."""
        spent = self.spent
        return spent < BUDGET or spent < SHARE * (_clock() - self.started)

    def _next(self) -> None:
        self.started = _clock()
        self.spent = 0.0
        self.polls += 1

    def wait_in_line(self) -> None:
        """Wait for a turn behind those already waiting."""
        me = Waiter()
        self.line.append(me)
        self._look_soon()
        try:
            me.get()
        except BaseException:  # killed while waiting (or after it was let go): out of line
            if me in self.line:
                self.line.remove(me)
            raise

    def _look_soon(self) -> None:
        """Look at the line once the greenlets ready now have run (their turns end first)."""
        if not self.letting:
            self.letting = True
            self.loop.run_callback(self._let_one_go)

    def _let_one_go(self) -> None:
        """The hub's: let the first in line go while the share lasts, then look again once it
        has had its turn; when it is spent, look again after the next poll."""
        self.letting = False
        if not self.line:
            return
        self.letting = True
        if self.share_left():
            # The next look is queued first, and runs once this one has had its turn.
            self.loop.run_callback(self._let_one_go)
            self.line.popleft().switch(None)  # (straight to it: no further poll first)
        else:
            self.timer.start(self._let_one_go)  # (libev runs timers after polling)


# (weak: a hub that is gone, a worker thread's, takes its iteration with it)
_iterations: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# When each greenlet last came back from pause().
_turn_from: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _iteration() -> _Iteration:
    hub = gevent.get_hub()
    it = _iterations.get(hub)
    if it is None:
        it = _iterations[hub] = _Iteration(hub)
    return it


def _turn_started(it: _Iteration) -> float:
    """When this greenlet's turn began: its last return from a pause, or the iteration's
    start, whichever is later (a greenlet that blocked on its socket since is not charged for
    the wait)."""
    return max(_turn_from.get(getcurrent(), 0.0), it.started)


def _end_turn(it: _Iteration) -> None:
    it.spent += _clock() - _turn_started(it)


def _start_turn(it: _Iteration) -> None:
    """Wait for a turn (behind any bulk work already waiting, or for an iteration with share
    left), then count this greenlet's turn from now."""
    if it.line or not it.share_left():
        it.wait_in_line()
    _turn_from[getcurrent()] = _clock()


def after_answer(fn: Callable[..., Any], *args: Any) -> None:
    """Call fn(*args) at the hub's next turn: bookkeeping of a request (its log line, its
    metrics) that its answer need not wait for. A request's greenlet writes its answer before
    it next blocks, and the hub runs callbacks only once it has: each action's answer was
    ~45 µs later for its log line and ~50 µs for its metrics (issue #16)."""
    gevent.get_hub().loop.run_callback(fn, *args)


def polls() -> int:
    """How many times this hub's loop has polled its sockets (a mark: work that finds it
    changed has waited for a poll, and every other socket had its turn meanwhile)."""
    return _iteration().polls


def pause() -> None:
    """End this greenlet's turn of bulk work. While the iteration has share left and no other
    bulk work waits, the greenlets ready now run first and this one comes back before the
    next poll; otherwise it waits in line (after the poll, once the share is spent)."""
    it = _iteration()
    _end_turn(it)
    if not it.line and it.share_left():
        gevent.sleep(0)  # the greenlets ready now run first: they may spend what was left
    _start_turn(it)


def poll() -> None:
    """End this turn at the hub's next poll, share left or not: the reply another greenlet
    waits for may be in a socket the hub has not looked at yet."""
    it = _iteration()
    _end_turn(it)
    gevent.sleep(_AFTER_POLL)
    _turn_from[getcurrent()] = _clock()


def begin() -> None:
    """Start a turn of bulk work that its socket woke (its first since it waited on I/O), as
    a turn ending in pause() would: twenty readers woken by one poll would otherwise each take
    a whole turn before the next poll."""
    _start_turn(_iteration())


def pace(turn: float | None = None) -> None:
    """pause() once this greenlet's turn has lasted `turn` (TURN) seconds: for loops whose
    steps are too small to pause after each."""
    if _clock() - _turn_started(_iteration()) >= (TURN if turn is None else turn):
        pause()
