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
    t = memory.Trimmer(every=10.0, clock=lambda: clock[0], cpu=lambda: 0.0, resident=lambda: 0)
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
    """A process's clock, CPU time and resident size, moved by a test."""

    def __init__(self) -> None:
        self.now = 100.0
        self.cpu = 0.0
        self.rss = 500 << 20

    def run(self, seconds: float, busy: float) -> None:
        """`seconds` pass with `busy` of a core used."""
        self.now += seconds
        self.cpu += seconds * busy

    def trimmer(self, monkeypatch: Any, trimmed: list[int]) -> memory.Trimmer:
        def trim(pad: int) -> int:
            trimmed.append(pad)
            self.rss -= 4 << 20  # what the trim gave back
            return 1

        monkeypatch.setattr(memory, "_malloc_trim", lambda: trim)
        return memory.Trimmer(
            every=10.0, clock=lambda: self.now, cpu=lambda: self.cpu, resident=lambda: self.rss
        )


def test_a_busy_process_is_trimmed_only_once_it_has_grown(monkeypatch: Any) -> None:
    """A trim holds glibc's heap lock while it walks the heap, and the hub's next malloc waits
    for it: beside 10,000 channels and 16 portals it stopped the hub for 13-85 ms every 10 s.
    Failed before the fix: a trim every interval, however busy."""
    p = _Process()
    trimmed: list[int] = []
    t = p.trimmer(monkeypatch, trimmed)
    for _ in range(200):  # 50 s ingesting and serving: a whole core, RSS as it was
        p.run(0.25, busy=1.0)
        t.tick()
        gevent.sleep(0)
    assert trimmed == []
    p.rss += memory.TRIM_GROWTH - 1  # grown, not yet enough
    p.run(0.25, busy=1.0)
    t.tick()
    gevent.sleep(0.05)
    assert trimmed == []
    p.rss += 1
    p.run(0.25, busy=1.0)
    t.tick()
    wait_until(lambda: t.trims == 1, what="the trim of a grown process")
    # measured again after it: growth counts from what the trim left (counted from the start,
    # it had grown enough already)
    p.rss += memory.TRIM_GROWTH - 1
    for _ in range(80):
        p.run(0.25, busy=1.0)
        t.tick()
        gevent.sleep(0)
    assert t.trims == 1
    p.rss += 1
    p.run(0.25, busy=1.0)
    t.tick()
    wait_until(lambda: t.trims == 2, what="the second trim of a grown process")


def test_a_process_that_goes_quiet_is_trimmed_at_its_first_quiet_tick(monkeypatch: Any) -> None:
    """When the calls stop, memory returns to its floor (issue #17): the first tick that finds
    the process quiet trims, as every interval did before; a tick as busy as QUIET allows does
    too, and one a little busier does not."""
    p = _Process()
    trimmed: list[int] = []
    t = p.trimmer(monkeypatch, trimmed)
    for _ in range(60):  # 15 s busy: due, not grown
        p.run(0.25, busy=0.9)
        t.tick()
    p.run(0.25, busy=memory.QUIET * 1.2)
    t.tick()
    gevent.sleep(0.05)
    assert trimmed == []
    p.run(0.25, busy=memory.QUIET * 0.8)
    t.tick()
    wait_until(lambda: t.trims == 1, what="the trim of a quiet process")
    for _ in range(39):  # quiet, within the interval: no second trim
        p.run(0.25, busy=0.0)
        t.tick()
    gevent.sleep(0.05)
    assert t.trims == 1
    p.run(0.25, busy=0.0)
    t.tick()
    wait_until(lambda: t.trims == 2, what="the next interval's trim")


def test_resident_bytes_is_this_process_resident_size() -> None:
    before = memory.resident_bytes()
    block = bytearray(64 << 20)  # touched: zero-filled pages are resident once written
    for i in range(0, len(block), 4096):
        block[i] = 1
    grown = memory.resident_bytes() - before
    del block
    assert 60 << 20 <= grown <= 80 << 20
