"""Attacks on channelsd.turns from outside: a hostile switch (bursts after silence, readers
killed while they wait), a hostile network (sockets readable at awkward moments) and hostile
load (crowds of bulk greenlets, callers from the hub, threads).

Each test names what it checks; the clock is turns' own fake (a turn 'takes' what the test
says), except where a thread's hub must run on its own.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
import gevent.socket
import greenlet
import pytest
from gevent import monkey
from gevent.exceptions import BlockingSwitchOutError
from gevent.threadpool import ThreadPool

from channelsd import turns

from conftest import TurnClock, bulk_crowd

MS = 0.001
# 1 ms turns in a budget, and the one turn let go after the poll before the sockets it woke
AT_MOST = round(turns.BUDGET / MS) + 1


@pytest.fixture
def clock(turn_clock: TurnClock) -> TurnClock:
    """conftest's turn_clock, by the name these tests use."""
    return turn_clock


def pair() -> tuple[gevent.socket.socket, gevent.socket.socket]:
    a, b = socket.socketpair()
    return gevent.socket.socket(fileno=a.detach()), gevent.socket.socket(fileno=b.detach())


def slow_poll(clock: TurnClock, seconds: float) -> list[Any]:
    """The hub's next poll 'takes' `seconds` (an idle hub): the clock jumps as the poll
    returns, before anything it woke runs (libev runs check watchers first after a poll).
    Returns [the watcher, and True once it jumped]: keep it until then."""
    watcher = gevent.get_hub().loop.check(ref=False)
    state: list[Any] = [watcher]

    def jump() -> None:
        watcher.stop()
        clock.now += seconds
        state.append(True)

    watcher.start(jump)
    return state


def settle() -> None:
    """Let any look at the line still due run (a callback, or the timer after a poll)."""
    for _ in range(3):
        gevent.sleep(0.001)


# --- defects -------------------------------------------------------------------------------


def test_readers_woken_by_a_slow_poll_get_a_budget_not_a_turn_each(clock: TurnClock) -> None:
    """An idle hub (its poll blocked 100 ms), then one poll finds 20 nodes' events and a
    request: the readers take a budget's worth of turns before the next poll, not one each.
    Fails: the iteration is stamped before the poll, so the idle 100 ms count as the
    iteration's length and begin() finds SHARE of it (67 ms) left for the readers."""
    n = 20
    request_pair, *reader_pairs = [pair() for _ in range(n + 1)]
    taken: list[int] = []  # turns.polls() at each reader's turn
    served: list[int] = []

    def request() -> None:
        request_pair[0].recv(1)
        served.append(len(taken))

    def reader(sock: gevent.socket.socket) -> None:
        sock.recv(1)
        turns.begin()  # as the ESL reader does when its socket wakes it
        clock.now += MS
        taken.append(turns.polls())
        turns.pause()

    greenlets = [gevent.spawn(request)] + [gevent.spawn(reader, r) for r, _ in reader_pairs]
    try:
        gevent.sleep(0.01)  # all wait in recv
        keep = slow_poll(clock, 0.1)
        for _, w in [request_pair, *reader_pairs]:  # the request's socket first
            w.send(b"x")
        gevent.joinall(greenlets, timeout=10)
        assert keep[1:] == [True]
    finally:
        gevent.killall(greenlets)
        for r, w in [request_pair, *reader_pairs]:
            r.close()
            w.close()
    assert len(taken) == n
    most_between_polls = max(taken.count(p) for p in set(taken))
    assert most_between_polls <= AT_MOST, taken
    assert served and served[0] <= AT_MOST, (served, taken)


def test_a_greenlet_that_waited_on_its_socket_is_not_charged_for_the_poll(
    clock: TurnClock,
) -> None:
    """A reader between pauses blocks on its socket while the hub idles 100 ms; woken, it
    does next to nothing and pauses: it comes back before the next poll (as _turn_started
    says, a greenlet that blocked on its socket is not charged for the wait). Fails: the
    iteration began before the poll, so the whole idle wait is charged to it as bulk work,
    and it (a reconcile waiting for each answer, a paced HTTP read) waits for another poll."""
    a, b = pair()
    came_back_after: list[int] = []

    def reader() -> None:
        turns.pause()
        a.recv(1)  # the hub idles
        before = turns.polls()
        turns.pause()  # a turn that took no time
        came_back_after.append(turns.polls() - before)

    g = gevent.spawn(reader)
    try:
        gevent.sleep(0.01)
        keep = slow_poll(clock, 0.1)
        b.send(b"x")
        g.join(10)
        assert keep[1:] == [True]
    finally:
        g.kill()
        a.close()
        b.close()
    assert came_back_after == [0]


def test_a_pause_that_came_back_at_once_does_not_skip_the_line(clock: TurnClock) -> None:
    """Twenty greenlets start (twenty readers after a blip), each with a short first turn and
    then 1 ms turns; a socket is readable meanwhile. It is served after a budget's worth of
    turns. Fails since the line (5cdf73f): a pause that found share left sleeps(0) and then
    goes on without looking again, so all twenty 1 ms turns run before the next poll (the
    share spent by the others meanwhile, and the ones in line passed over). The pause before
    the line looked again after its sleep(0)."""
    done: list[int] = []
    running = [True]

    def bulk() -> None:
        turns.begin()
        turns.pause()  # a short turn: little to do yet
        while running[0]:
            clock.now += MS
            done.append(1)
            turns.pause()

    reader, writer = pair()
    seen: list[int] = []

    def serve() -> None:
        reader.recv(1)
        seen.append(len(done))

    server = gevent.spawn(serve)
    workers: list[gevent.Greenlet] = []
    try:
        gevent.sleep(0.01)  # the server waits in recv
        writer.send(b"x")
        workers = [gevent.spawn(bulk) for _ in range(20)]
        server.join(10)
    finally:
        running[0] = False
        gevent.joinall(workers, timeout=10)
        server.kill()
        reader.close()
        writer.close()
    assert seen and seen[0] <= AT_MOST, seen


# --- attacks that held ---------------------------------------------------------------------


def _taking_turns(
    clock: TurnClock, count: int, act: Callable[[deque[Any]], None]
) -> gevent.Greenlet:
    """A greenlet of bulk work taking `count` 1 ms turns, and in each one doing `act` to the
    line as it is then."""

    def run() -> None:
        turns.begin()
        for _ in range(count):
            clock.now += MS
            act(turns._iteration().line)
            turns.pause()

    return gevent.spawn(run)


def test_a_kill_queued_before_the_greenlet_is_let_go_lands_in_line(clock: TurnClock) -> None:
    """Let go with its kill already queued: it dies in line later; no stale place, no stall."""
    log: list[int] = []
    workers = bulk_crowd(clock, 5, 30, log)
    killed: list[int] = []
    kill_at: list[int] = []

    def kill_first(line: deque[Any]) -> None:
        if not killed and len(line) >= 2:
            first = line[0].greenlet  # the next let go (its look is queued already)
            killed.append(workers.index(first))
            kill_at.append(len(log))
            first.kill(block=False)

    k = _taking_turns(clock, 30, kill_first)
    gevent.joinall([*workers, k], timeout=10)
    settle()
    assert killed and all(w.dead for w in workers) and k.dead
    assert killed[0] in log[kill_at[0] :]  # (it was let go once more, the kill on its way)
    for i in range(5):
        if i != killed[0]:
            assert log.count(i) == 30, (i, log)
    it = turns._iteration()
    assert not it.line and not it.letting and not it.timer.active


def test_kill_with_block_from_a_turn_of_the_next_in_line(clock: TurnClock) -> None:
    """A turn that kills the next in line and joins it: nobody stuck, the line ends idle."""
    log: list[int] = []
    workers = bulk_crowd(clock, 4, 20, log)
    done: list[bool] = []

    def kill_first(line: deque[Any]) -> None:
        if not done and line:
            line[0].greenlet.kill(block=True, timeout=5)
            done.append(True)

    k = _taking_turns(clock, 20, kill_first)
    gevent.joinall([*workers, k], timeout=10)
    settle()
    assert done and k.dead and all(w.dead for w in workers)
    assert sum(1 for w in workers if log.count(workers.index(w)) == 20) == 3
    it = turns._iteration()
    assert not it.line and not it.letting


def test_timeouts_expiring_in_line_leave_it_sound(clock: TurnClock) -> None:
    """1 us Timeouts expiring in line (before or after the look): all end, the line ends idle."""
    timeouts: list[int] = []

    def bulk(i: int) -> None:
        for _ in range(20):
            clock.now += MS
            try:
                with gevent.Timeout(1e-6):
                    turns.pause()
            except gevent.Timeout:
                timeouts.append(i)

    workers = [gevent.spawn(bulk, i) for i in range(10)]
    assert len(gevent.joinall(workers, timeout=10)) == 10
    settle()
    assert timeouts  # (some did expire in line)
    it = turns._iteration()
    assert not it.line and not it.letting
    log: list[int] = []
    assert len(gevent.joinall(bulk_crowd(clock, 3, 10, log), timeout=10)) == 3
    assert len(log) == 30


def test_a_greenlet_that_raises_after_it_is_let_go_stalls_nobody(clock: TurnClock) -> None:
    """Greenlets raising as soon as they are let go: the others still take all their turns."""

    def raiser() -> None:
        clock.now += MS
        turns.pause()
        raise RuntimeError("a reader's bug")

    log: list[int] = []
    bad = [gevent.spawn(raiser) for _ in range(10)]
    good = bulk_crowd(clock, 3, 20, log)
    gevent.joinall([*bad, *good], timeout=10)
    settle()
    assert all(g.dead for g in bad) and all(isinstance(g.exception, RuntimeError) for g in bad)
    assert len(log) == 60
    assert not turns._iteration().letting


def test_a_greenlet_let_go_that_blocks_on_its_socket_stalls_nobody(clock: TurnClock) -> None:
    """The one let go blocks on its socket for good: the next in line is let go at once."""
    a, b = pair()
    blocked: list[bool] = []

    def stuck() -> None:
        clock.now += MS
        turns.pause()
        blocked.append(True)
        a.recv(1)  # never comes

    log: list[int] = []
    s = gevent.spawn(stuck)
    workers = bulk_crowd(clock, 4, 20, log)
    try:
        gevent.joinall(workers, timeout=10)
        assert blocked and not s.dead
        assert len(log) == 80
    finally:
        s.kill()
        a.close()
        b.close()


def test_stopping_while_many_wait_leaves_the_line_idle(clock: TurnClock) -> None:
    """killall of fifty in line, half pausing in finally: all die, line idle, later work runs."""
    cleaned: list[int] = []

    def bulk(i: int) -> None:
        try:
            while True:
                clock.now += MS
                turns.pause()
        finally:
            if i % 2:
                for _ in range(3):
                    clock.now += MS
                    turns.pause()
            cleaned.append(i)

    workers = [gevent.spawn(bulk, i) for i in range(50)]
    gevent.sleep(0.01)
    assert len(turns._iteration().line) > 40
    gevent.killall(workers, timeout=10)
    settle()
    assert all(w.dead for w in workers) and len(cleaned) == 50
    it = turns._iteration()
    assert not it.line and not it.letting and not it.timer.active
    log: list[int] = []
    assert len(gevent.joinall(bulk_crowd(clock, 2, 10, log), timeout=10)) == 2


def test_pause_from_the_hub_raises_and_leaves_the_line_sound(clock: TurnClock) -> None:
    """pause() in a hub callback/timer raises BlockingSwitchOutError and leaves the line sound."""
    errors: list[str] = []

    def in_hub() -> None:
        try:
            turns.pause()
        except BlockingSwitchOutError as exc:
            errors.append(type(exc).__name__)

    log: list[int] = []
    workers = bulk_crowd(clock, 5, 20, log)
    gevent.sleep(0)
    hub = gevent.get_hub()
    assert turns._iteration().line
    hub.loop.run_callback(in_hub)
    timer = hub.loop.timer(0)
    timer.start(in_hub)
    gevent.joinall(workers, timeout=10)
    settle()
    timer.close()
    assert errors == ["BlockingSwitchOutError"] * 2
    assert len(log) == 100
    assert not turns._iteration().letting


def test_a_waiting_greenlet_is_only_resumed_by_the_hub_at_its_turn(clock: TurnClock) -> None:
    """Only the hub pops the line, the popped greenlet is the next resumed, none resumed in line."""
    it = turns._iteration()
    hub = gevent.get_hub()
    problems: list[str] = []
    expected: list[Any] = []
    popped = [0]

    class Line(deque):  # type: ignore[type-arg]
        def popleft(self) -> Any:
            waiter = super().popleft()
            popped[0] += 1
            if greenlet.getcurrent() is not hub:
                problems.append("popped outside the hub")
            expected.append(waiter.greenlet)
            return waiter

    def trace(event: str, args: tuple[Any, Any]) -> None:
        origin, target = args
        if event == "switch":
            if any(w.greenlet is target for w in it.line):
                problems.append("resumed while in line")
            if expected and (target is not expected.pop() or origin is not hub):
                problems.append("the one let go was not the next resumed")

    it.line = Line()
    log: list[int] = []
    try:
        workers = bulk_crowd(clock, 10, 20, log)
        greenlet.settrace(trace)
        gevent.joinall(workers, timeout=10)
    finally:
        greenlet.settrace(None)
        it.line = deque(it.line)
    assert len(log) == 200
    assert popped[0] > 100  # (most turns came through the line)
    assert not problems, problems[:5]


def test_poll_users_do_not_starve_the_line(clock: TurnClock) -> None:
    """Ten greenlets ending every turn with poll() leave the line about a turn per poll."""
    polled = [0]
    bulk_turns = [0]
    running = [True]

    def poller() -> None:
        while running[0]:
            clock.now += MS
            polled[0] += 1
            turns.poll()

    def bulk() -> None:
        while running[0]:
            clock.now += MS
            bulk_turns[0] += 1
            turns.pause()

    before = turns.polls()
    workers = [gevent.spawn(poller) for _ in range(10)] + [gevent.spawn(bulk) for _ in range(2)]
    while polled[0] < 3000:
        gevent.sleep(0.001)
    running[0] = False
    gevent.joinall(workers, timeout=10)
    polls = turns.polls() - before
    assert bulk_turns[0] >= polls // 2, (bulk_turns, polls)


def test_requests_that_sleep_0_are_not_starved_by_a_crowd_in_line(clock: TurnClock) -> None:
    """A sleep(0) request steps at least once per budget of turns of thirty bulk greenlets."""
    bulk_turns = [0]
    steps: list[int] = []
    running = [True]

    def request() -> None:
        while running[0]:
            steps.append(bulk_turns[0])
            gevent.sleep(0)

    def bulk() -> None:
        turns.begin()
        while running[0]:
            clock.now += MS
            bulk_turns[0] += 1
            turns.pause()

    workers = [gevent.spawn(bulk) for _ in range(30)]
    r = gevent.spawn(request)
    while bulk_turns[0] < 300:
        gevent.sleep(0.001)
    running[0] = False
    gevent.joinall([*workers, r], timeout=10)
    settled = [b for b in steps if b > 60]
    gaps = [b - a for a, b in zip(settled, settled[1:], strict=False)]
    assert max(gaps) <= AT_MOST, max(gaps)


def test_pace_and_pause_share_the_line(clock: TurnClock) -> None:
    """pace() loops and pause() loops share one line: both end, pace pauses about once a TURN."""
    pauses = [0]
    real_pause = turns.pause

    def counting() -> None:
        pauses[0] += 1
        real_pause()

    def paced() -> None:
        for _ in range(200):
            clock.now += turns.TURN / 4
            turns.pace()

    log: list[int] = []
    turns.pause = counting  # (pace looks it up in the module)
    try:
        workers = [gevent.spawn(paced) for _ in range(3)] + bulk_crowd(clock, 3, 20, log)
        assert len(gevent.joinall(workers, timeout=10)) == 6
    finally:
        turns.pause = real_pause
    assert len(log) == 60
    # every fourth or fifth step (four quarters may add up to a hair under TURN)
    assert 3 * 200 // 5 - 3 <= pauses[0] - 60 <= 3 * 200 // 4 + 3, pauses


def test_a_thread_pool_worker_takes_turns_on_its_own_hub() -> None:
    """Thread-pool workers pausing on hubs of their own: own iterations and lines, all work ends."""
    spin_until = time.perf_counter

    def spin(seconds: float) -> None:
        end = spin_until() + seconds
        while spin_until() < end:
            pass

    def work(n: int) -> tuple[bool, int]:
        turns.begin()
        for _ in range(n):
            spin(0.0001)
            turns.pace(0.0002)
            turns.pause()
        it = turns._iteration()
        return it is not main_it, len(it.line)

    def main_bulk() -> None:
        for _ in range(100):
            spin(0.0001)
            turns.pause()

    main_it = turns._iteration()
    pool = ThreadPool(2)
    try:
        local = [gevent.spawn(main_bulk) for _ in range(3)]
        results = [pool.spawn(work, 50) for _ in range(4)]
        assert [r.get(timeout=20) for r in results] == [(True, 0)] * 4
        assert len(gevent.joinall(local, timeout=20)) == 3
    finally:
        pool.kill()
    assert not main_it.line


def test_two_native_threads_with_hubs_of_their_own() -> None:
    """Two native threads with hubs of their own, against the main hub: no shared line, all end."""
    start = monkey.get_original("_thread", "start_new_thread")
    allocate = monkey.get_original("_thread", "allocate_lock")
    real_sleep = monkey.get_original("time", "sleep")
    results: list[tuple[int, bool, int]] = []
    locks = []

    def busy() -> None:
        end = time.perf_counter() + 0.0001
        while time.perf_counter() < end:
            pass

    def bulk() -> None:
        for _ in range(60):
            busy()
            turns.pause()

    def native(k: int, lock: Any) -> None:
        try:
            gs = [gevent.spawn(bulk) for _ in range(5)]
            gevent.joinall(gs, timeout=20)
            results.append((k, all(g.dead for g in gs), len(turns._iteration().line)))
            gevent.get_hub().destroy(destroy_loop=True)
        finally:
            lock.release()

    for k in range(2):
        lock = allocate()
        lock.acquire()
        locks.append(lock)
        start(native, (k, lock))
    local = [gevent.spawn(bulk) for _ in range(3)]
    assert len(gevent.joinall(local, timeout=20)) == 3
    deadline = time.monotonic() + 20
    for lock in locks:
        while not lock.acquire(False):
            assert time.monotonic() < deadline
            real_sleep(0.005)
    assert sorted(results) == [(0, True, 0), (1, True, 0)]
    assert not turns._iteration().line
