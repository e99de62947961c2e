"""Freed memory is given back to the system (channelsd/memory.py), off the hub, and not
while the process is busy unless it has grown."""

import threading
from typing import Any

import gevent

from channelsd import memory

from conftest import wait_until


def test_malloc_trim_runs_in_a_worker_thread_at_most_every_interval(monkeypatch: Any) -> None:
    calls: list[int] = []
    hub_thread = threading.get_ident()

    def trim(pad: int) -> int:
        calls.append(threading.get_ident())
        return 1

    monkeypatch.setattr(memory, "_malloc_trim", lambda: trim)
    clock = [100.0]
    t = memory.Trimmer(every=10.0, clock=lambda: clock[0], cpu=lambda: 0.0)
    t.tick()  # not due yet: the interval runs from the start
    gevent.sleep(0.05)
    assert calls == []
    clock[0] += 10.0
    t.tick()
    t.tick()  # the same instant: one trim
    wait_until(lambda: t.trims == 1, what="the trim")
    clock[0] += 5.0
    t.tick()
    gevent.sleep(0.05)
    assert t.trims == 1
    clock[0] += 5.0
    t.tick()
    wait_until(lambda: t.trims == 2, what="the second trim")
    assert len(calls) == 2 and hub_thread not in calls  # never on the hub's thread


def test_the_daemon_trims_from_its_loop_ticks(make_daemon: Any, switch: Any) -> None:
    h = make_daemon([switch])
    trimmer = h.daemon.trimmer
    assert trimmer.available  # glibc here: a build without malloc_trim would do nothing
    trimmer.every = 0.0
    before = trimmer.trims
    wait_until(lambda: trimmer.trims > before, what="a trim from the loop monitor's tick")


class _Process:
    """A process's clock and CPU time, moved by a test, and its trimmer's trims."""

    def __init__(self, monkeypatch: Any) -> None:
        self.now = 100.0
        self.cpu = 0.0
        monkeypatch.setattr(memory, "_malloc_trim", lambda: lambda pad: 1)
        self.trimmer = memory.Trimmer(clock=lambda: self.now, cpu=lambda: self.cpu)

    def run(self, seconds: float, busy: float) -> None:
        """`seconds` of 0.25 s ticks with `busy` of a core used, each trim ended before the
        next tick."""
        for _ in range(round(seconds / 0.25)):
            self.now += 0.25
            self.cpu += 0.25 * busy
            self.trimmer.tick()
            running = self.trimmer._running
            if running is not None:
                running.get(timeout=10)


def test_a_busy_process_is_trimmed_every_busy_interval_not_every_ten_seconds(
    monkeypatch: Any,
) -> None:
    """A trim holds glibc's heap lock while it walks the heap, and the hub's next malloc waits
    for it: beside 10,000 channels and 16 portals it stopped the hub for 13-85 ms every 10 s.
    Failed before the fix: a trim every TRIM_EVERY, however busy (six in this minute)."""
    p = _Process(monkeypatch)
    p.run(memory.BUSY_TRIM_EVERY - 0.25, busy=1.0)
    assert p.trimmer.trims == 0
    p.run(0.25, busy=1.0)
    assert p.trimmer.trims == 1
    p.run(memory.BUSY_TRIM_EVERY - 0.25, busy=0.5)
    assert p.trimmer.trims == 1
    p.run(0.25, busy=0.5)
    assert p.trimmer.trims == 2


def test_a_process_that_goes_quiet_is_trimmed_at_its_first_quiet_tick(monkeypatch: Any) -> None:
    """When the calls stop, memory returns to its floor (issue #17): the first tick that finds
    the process quiet once TRIM_EVERY has passed trims; a tick as busy as QUIET allows does
    too, and one a little busier does not."""
    p = _Process(monkeypatch)
    p.run(15, busy=0.9)  # due if quiet, and not quiet
    p.run(0.25, busy=memory.QUIET * 1.2)
    assert p.trimmer.trims == 0
    p.run(0.25, busy=memory.QUIET * 0.8)
    assert p.trimmer.trims == 1
    p.run(memory.TRIM_EVERY - 0.25, busy=0.0)  # quiet, within the interval: no second trim
    assert p.trimmer.trims == 1
    p.run(0.25, busy=0.0)
    assert p.trimmer.trims == 2
