"""Freed memory is given back to the system (channelsd/memory.py), off the hub."""

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
    t = memory.Trimmer(every=10.0, clock=lambda: clock[0])
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
