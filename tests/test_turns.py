"""Bulk work and requests on the one hub (channelsd.turns), over real sockets.

gevent's sleep(0) runs a greenlet that pauses with it again before the hub polls its sockets,
up to 50 times or 5 ms of the hub's clock: a reader taking 1 ms turns held every request
for 50 ms. A bulk turn now ends the run once the iteration's budget is spent, so a socket that
became readable is served after a budget's worth of bulk turns (however many greenlets have
bulk work, and however they were woken), and requests that never stop still leave bulk work
its share.
"""

from __future__ import annotations

import socket
import time

import gevent
import gevent.event
import gevent.socket
import pytest

from channelsd import turns

from conftest import count_pauses


class TurnClock:
    """turns' clock, moved by the bulk work itself: each turn 'takes' a millisecond whatever
    the machine's speed, so the test counts turns, not time."""

    def __init__(self) -> None:
        self.now = time.perf_counter()

    def __call__(self) -> float:
        return self.now


def served_after(bulk_greenlets: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Start bulk greenlets taking 1 ms turns, make a real socket readable, and return how many
    bulk turns ran before the greenlet waiting on it was served (for three bytes in a row)."""
    clock = TurnClock()
    monkeypatch.setattr(turns, "_clock", clock)
    done: list[int] = []
    running = [True]

    def bulk() -> None:
        turns.begin()  # as a reader does when its socket wakes it
        while running[0] and len(done) < 20_000:
            clock.now += 0.001
            done.append(1)
            turns.pause()

    a, b = socket.socketpair()
    reader = gevent.socket.socket(fileno=a.detach())
    writer = gevent.socket.socket(fileno=b.detach())
    seen: list[int] = []
    got = gevent.event.Event()

    def serve() -> None:
        while len(seen) < 3:
            if not reader.recv(1):
                return
            seen.append(len(done))
            got.set()

    server = gevent.spawn(serve)
    gevent.sleep(0.01)  # the server waits in recv
    workers = [gevent.spawn(bulk) for _ in range(bulk_greenlets)]
    gaps = []
    try:
        for _ in range(3):
            got.clear()
            before = len(done)
            writer.send(b"x")
            assert got.wait(30), "the socket was never served"
            gaps.append(seen[-1] - before)
    finally:
        running[0] = False
        gevent.joinall([*workers, server], timeout=10)
        reader.close()
        writer.close()
    return gaps


@pytest.mark.parametrize("bulk_greenlets", [1, 20])
def test_a_readable_socket_waits_for_one_budget_of_bulk_work(
    bulk_greenlets: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    gaps = served_after(bulk_greenlets, monkeypatch)
    # BUDGET is 2 ms: two 1 ms turns end the iteration; the poll comes before a third
    # (with sleep(0) it came after thousands: the turns took no time on the hub's clock).
    turns_per_budget = round(turns.BUDGET / 0.001)
    assert all(gap <= turns_per_budget + 1 for gap in gaps), gaps


def test_requests_that_never_stop_leave_bulk_work_its_share() -> None:
    """A request that always has more to do (sleep(0) between its steps, as a long list's
    build does) and bulk work pausing with turns: both progress, in shares near SHARE."""
    counts = {"bulk": 0, "request": 0}
    running = [True]

    def spin(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    def request() -> None:
        while running[0]:
            spin(0.0003)
            counts["request"] += 1
            gevent.sleep(0)

    def bulk() -> None:
        while running[0]:
            spin(0.0003)
            counts["bulk"] += 1
            turns.pause()

    workers = [gevent.spawn(request), gevent.spawn(request), gevent.spawn(bulk)]
    gevent.sleep(0.5)
    running[0] = False
    gevent.joinall(workers, timeout=10)
    total = counts["bulk"] + counts["request"]
    assert total > 100, counts
    # Two requests against one bulk greenlet: round robin would give bulk a third; the
    # share gives it more, never starving either side.
    assert 0.25 < counts["bulk"] / total < 0.9, counts


def test_a_turn_measured_by_pace_ends_with_a_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = TurnClock()
    monkeypatch.setattr(turns, "_clock", clock)
    pauses = count_pauses(monkeypatch, turns, "pause")

    def loop() -> None:
        for _ in range(10):
            clock.now += turns.TURN / 2
            turns.pace()

    gevent.spawn(loop).join()
    assert 4 <= len(pauses) <= 5  # every other step of half a turn
