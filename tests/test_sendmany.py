"""A publish's bytes to many sockets (channelsd.sendmany, channelsd_sendmany): the C call held
to its Python definition over real socket pairs, the Courier's order and hand-over, and the
websocket sessions that the hub's courier writes to from a native thread."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gevent
import gevent.event
import gevent.monkey
import gevent.threadpool
import pytest
from gevent.threadpool import ThreadPool
from hypothesis import given, settings
from hypothesis import strategies as st
from kazoo_support import WsClient
from test_websocket import ACC1, call_ids, raw_frame, slow_subscriber, ws_url
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Ping, TextMessage

from channelsd import builds, sendmany

from conftest import Harness, token, wait_until

real_lock = gevent.monkey.get_original("_thread", "allocate_lock")
real_socketpair = gevent.monkey.get_original("socket", "socketpair")

try:
    from channelsd_sendmany import send_each as c_send_each
except ImportError:
    c_send_each = None


def test_the_c_sends_are_built_from_this_source() -> None:
    assert c_send_each is not None, "channelsd_sendmany is not built: `pip install -e .` builds it"
    assert builds.source_state("channelsd_sendmany") == "current", (
        "channelsd_sendmany was built from another sendmany.c: `pip install -e .` again"
    )
    assert sendmany.built() and sendmany.install_warning() is None


IMPLEMENTATIONS = {"c": lambda: c_send_each, "python": lambda: sendmany.send_each_python}


Pair = tuple[socket.socket, socket.socket]


@contextlib.contextmanager
def socket_pairs(n: int, sndbuf: int | None = None) -> Iterator[list[Pair]]:
    """Unblocking stream socket pairs (the kernel's, not gevent's), closed on leaving; the
    first of each sends, with `sndbuf` as its send buffer when given."""
    made: list[Pair] = []
    try:
        for _ in range(n):
            a, b = real_socketpair()
            made.append((a, b))
            for s in (a, b):
                s.setblocking(False)
            if sndbuf is not None:
                a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        yield made
    finally:
        for a, b in made:
            a.close()
            b.close()


@pytest.fixture
def pairs() -> Iterator[Callable[[int], list[Pair]]]:
    """socket_pairs for the length of a test."""
    with contextlib.ExitStack() as stack:
        yield lambda n: stack.enter_context(socket_pairs(n))


def drain(s: socket.socket) -> bytes:
    got = b""
    while True:
        try:
            chunk = s.recv(1 << 20)
        except BlockingIOError:
            return got
        if not chunk:
            return got
        got += chunk


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 300_000), max_size=6), small=st.booleans())
def test_each_socket_gets_a_prefix_of_its_data_and_is_told_its_length(
    impl: str, sizes: list[int], small: bool
) -> None:
    send_each = IMPLEMENTATIONS[impl]()
    # small: a peer that cannot take it all (the send stops short, never waits)
    with socket_pairs(len(sizes), 4096 if small else None) as made:
        datas = [os.urandom(n) for n in sizes]
        sent = send_each([a.fileno() for a, _ in made], datas)
        assert len(sent) == len(sizes)
        for (_, b), data, n in zip(made, datas, sent, strict=True):
            assert 0 <= n <= len(data)
            assert drain(b) == data[:n]
            if not small and len(data) <= 50_000:
                assert n == len(data)  # what fits in an empty buffer is taken whole


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_socket_that_fails_is_its_own_error_and_nobody_elses(impl: str, pairs: Any) -> None:
    send_each = IMPLEMENTATIONS[impl]()
    (a, b), (c, d), (e, f) = pairs(3)
    d.close()  # c's peer is gone: EPIPE (with no SIGPIPE: the test process would die of it)
    r, w = os.pipe()  # not a socket
    try:
        notsock = w
        closed_fd = 1_000_000  # no such descriptor (a closed one's number may be reused)
        sent = send_each(
            [a.fileno(), c.fileno(), closed_fd, e.fileno()],
            [b"one", b"two", b"three", memoryview(b"four")],
        )
        assert sent[0] == 3 and drain(b) == b"one"
        assert sent[1] in (-errno.EPIPE, -errno.ECONNRESET)
        assert sent[2] == -errno.EBADF
        assert sent[3] == 4 and drain(f) == b"four"
        if impl == "c":  # (the definition's os.write would write to a pipe)
            assert send_each([notsock], [b"x"]) == [-errno.ENOTSOCK]
    finally:
        os.close(r)
        os.close(w)


def test_the_c_call_refuses_what_it_cannot_send() -> None:
    assert c_send_each is not None
    with pytest.raises(ValueError):
        c_send_each([1, 2], [b"x"])
    with pytest.raises(TypeError):
        c_send_each(["1"], [b"x"])
    with pytest.raises(ValueError):
        c_send_each([-1], [b"x"])
    with pytest.raises(TypeError):
        c_send_each([1], ["text is not bytes"])
    with pytest.raises(TypeError):
        c_send_each(3, [b"x"])
    assert c_send_each([], []) == []
    assert c_send_each((), ()) == []


# -- the Courier ------------------------------------------------------------------------------


class Owner:
    """An addressee over a real socket pair: what it was told, in order."""

    def __init__(self, sock: socket.socket, busy: bool = False) -> None:
        self.sock = sock
        self.busy = busy
        self.kept: list[bytes] = []  # what it keeps to write itself
        self.told: list[tuple[bytes, int]] = []
        self.in_flight = False

    def claim(self, data: bytes) -> int | None:
        assert not self.in_flight, "claimed again before it was told"
        if self.busy:
            self.kept.append(data)
            return None
        self.in_flight = True
        return self.sock.fileno()

    def sent(self, data: bytes, n: int) -> None:
        assert self.in_flight
        self.in_flight = False
        self.told.append((data, n))


class Gate:
    """send_each held in its (native) thread until the test opens the gate: what happens
    while a publish is out is seen without guessing how long it is out. Once open, it stays
    open. A gate never opened fails the send (the hub could not run the greenlet that opens
    it)."""

    def __init__(self, send: sendmany.SendEach | None = None) -> None:
        self._send = send or c_send_each
        self._shut = real_lock()
        self._shut.acquire()

    def __call__(self, fds: Sequence[int], datas: Sequence[bytes]) -> list[int]:
        assert self._shut.acquire(timeout=10), "the gate was never opened"
        self._shut.release()
        return self._send(fds, datas)

    def open(self) -> None:
        self._shut.release()


def test_a_large_publish_goes_from_the_thread_a_small_one_from_the_hub(pairs: Any) -> None:
    (a, b), (c, d) = pairs(2)
    courier = sendmany.Courier(thread_bytes=1000)
    small, large = Owner(a), Owner(c)
    courier([(small, b"x" * 10)])
    assert courier.threaded == 0 and small.told == [(b"x" * 10, 10)]
    courier([(large, b"y" * 1000)])
    assert courier.threaded == 1 and large.told == [(b"y" * 1000, 1000)]
    assert drain(b) == b"x" * 10 and drain(d) == b"y" * 1000


def test_the_hub_goes_on_while_the_thread_sends(pairs: Any) -> None:
    ((a, b),) = pairs(1)
    gate = Gate()
    courier = sendmany.Courier(thread_bytes=1, send=gate)
    owner = Owner(a)
    # Only another greenlet can let the send go: the publish returns only if the hub ran it
    # while the publish was out.
    opener = gevent.spawn(gate.open)
    courier([(owner, b"data")])
    assert opener.successful()
    assert owner.told == [(b"data", 4)] and drain(b) == b"data"


def test_publishes_made_while_one_is_out_follow_it_in_order(pairs: Any) -> None:
    (a, b), (c, d) = pairs(2)
    gate = Gate()
    courier = sendmany.Courier(thread_bytes=1, send=gate)
    first, second = Owner(a), Owner(c)
    carriers = [
        gevent.spawn(courier, [(first, b"%d," % i), (second, b"%d," % i)]) for i in range(6)
    ]
    # The first carrier's publish is out; the others wait for it, each to send its own.
    wait_until(lambda: courier.waiting == 5, what="the later carriers waiting")
    assert not any(g.dead for g in carriers)
    gate.open()
    gevent.joinall(carriers, raise_error=True)
    assert drain(b) == drain(d) == b"0,1,2,3,4,5,"
    assert [n for _, n in first.told] == [2] * 6
    assert courier.threaded == 6


def test_a_busy_owner_keeps_its_bytes_and_is_not_told(pairs: Any) -> None:
    (a, b), (c, d) = pairs(2)
    courier = sendmany.Courier()
    busy, free = Owner(a, busy=True), Owner(c)
    courier([(busy, b"kept"), (free, b"sent")])
    assert busy.kept == [b"kept"] and busy.told == [] and drain(b) == b""
    assert free.told == [(b"sent", 4)]


def test_a_carrier_killed_while_the_thread_sends_leaves_the_owners_claimed_until_it_is_done(
    pairs: Any,
) -> None:
    ((a, b),) = pairs(1)
    gate = Gate()
    courier = sendmany.Courier(thread_bytes=1, send=gate)
    owner = Owner(a)
    carrier = gevent.spawn(courier, [(owner, b"out")])
    wait_until(lambda: owner.in_flight, what="the publish out")
    carrier.kill()
    # The thread still holds the descriptor: the owner must not write or close it yet.
    assert owner.in_flight and owner.told == []
    gate.open()
    wait_until(lambda: owner.told, timeout=5, what="the thread's answer")
    assert owner.told == [(b"out", 3)] and drain(b) == b"out"
    # The next publish is carried (the killed carrier let go of the queue).
    courier([(owner, b"next")])
    assert owner.told[-1] == (b"next", 4)


def test_a_close_while_the_thread_starts_sends_that_publish_from_the_hub(
    pairs: Any, held_start: Callable[[], None]
) -> None:
    """Failed before the fix (a CI run, once): the publish went on to a pool the close had
    let go, or to none at all, and its owner stayed claimed, its stream waiting for ever."""
    ((a, b),) = pairs(1)
    courier = sendmany.Courier(thread_bytes=1)
    owner = Owner(a)
    carrier = gevent.spawn(courier, [(owner, b"out")])
    wait_until(lambda: owner.in_flight and courier._pool is not None, what="the thread starting")
    closer = gevent.spawn(courier.close)
    wait_until(lambda: courier._closed, what="the close begun")
    held_start()
    carrier.get(timeout=10)
    closer.get(timeout=10)
    assert owner.told == [(b"out", 3)] and drain(b) == b"out"
    assert courier.threaded == 0 and courier._pool is None


def test_a_carrier_killed_while_the_thread_starts_tells_its_owners_nothing_went(
    pairs: Any, held_start: Callable[[], None]
) -> None:
    """Failed before the fix: the kill left the owner claimed for ever."""
    ((a, b),) = pairs(1)
    courier = sendmany.Courier(thread_bytes=1)
    owner = Owner(a)
    carrier = gevent.spawn(courier, [(owner, b"out")])
    wait_until(lambda: owner.in_flight and courier._pool is not None, what="the thread starting")
    carrier.kill()
    assert owner.told == [(b"out", 0)] and not owner.in_flight
    held_start()
    try:
        courier([(owner, b"next")])  # the thread, once started, carries the next publish
        assert owner.told[-1] == (b"next", 4) and courier.threaded == 1
        assert drain(b) == b"next"
    finally:
        courier.close()


class Pools:
    """The courier's pools, as made (`made`), each one's spawn first waiting for `slot`
    (set: no wait) — spawn's one wait, the thread's slot, held by the test."""

    def __init__(self) -> None:
        self.made: list[ThreadPool] = []
        self.slot = gevent.event.Event()
        self.slot.set()


@pytest.fixture
def pools(monkeypatch: pytest.MonkeyPatch) -> Pools:
    seen = Pools()

    class Pool(ThreadPool):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            seen.made.append(self)

        def spawn(self, *args: Any, **kwargs: Any) -> Any:
            seen.slot.wait()
            return super().spawn(*args, **kwargs)

    monkeypatch.setattr(sendmany, "ThreadPool", Pool)
    return seen


def test_a_close_waits_for_a_publish_waiting_for_the_threads_slot(pairs: Any, pools: Pools) -> None:
    """A publish that waits for the thread's slot (spawn's one wait, before it queues the
    job: two publishes killed while out hold both slots) when the close begins. Held here
    at that wait. Failed before the fix (an outside review's race): the close let the thread
    go first, and the job was queued to a pool with no thread — its owner claimed for ever,
    or a thread started after the close and never let go."""
    ((a, b),) = pairs(1)
    courier = sendmany.Courier(thread_bytes=1)
    courier([(Owner(a), b"warm")])  # the thread runs
    (pool,) = pools.made
    assert courier._pool is pool and drain(b) == b"warm"
    pools.slot.clear()
    owner = Owner(a)
    carrier = gevent.spawn(courier, [(owner, b"out")])
    wait_until(lambda: owner.in_flight, what="the publish claimed")
    closer = gevent.spawn(courier.close)
    wait_until(lambda: courier.waiting == 1, what="the close waiting for the publish")
    pools.slot.set()
    carrier.get(timeout=10)
    closer.get(timeout=10)
    assert owner.told == [(b"out", 3)] and drain(b) == b"out"
    assert courier._pool is None and pool.size == 0, "a thread left running after the close"


class FailingStarts:
    """How many more native thread starts fail, as at the system's limit, and how many
    were tried."""

    def __init__(self) -> None:
        self.left = 0
        self.tried = 0


@pytest.fixture
def thread_starts(monkeypatch: pytest.MonkeyPatch) -> FailingStarts:
    """gevent's thread starts, failing while `left` says so: RuntimeError("can't start new
    thread")."""
    real = gevent.threadpool.start_new_thread
    starts = FailingStarts()

    def start(function: Any, args: Any) -> Any:
        starts.tried += 1
        if starts.left > 0:
            starts.left -= 1
            raise RuntimeError("can't start new thread")
        return real(function, args)

    monkeypatch.setattr(gevent.threadpool, "start_new_thread", start)
    return starts


def test_a_thread_that_cannot_start_leaves_the_publish_to_the_hub_and_nothing_queued(
    pairs: Any, thread_starts: FailingStarts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failed before the fix (an outside review): a failed start left the publish's job in
    the pool's queue after its owner was told nothing went, and the thread started for a
    later publish wrote those bytes again (or to a socket that had the number by then)."""
    monkeypatch.setattr(sendmany, "START_RETRY_SECONDS", 0.0)  # each publish tries
    (a, b), (c, d), (e, f) = pairs(3)
    thread_starts.left = 2
    courier = sendmany.Courier(thread_bytes=1)
    one, two, three = Owner(a), Owner(c), Owner(e)
    try:
        courier([(one, b"first")])
        courier([(two, b"second")])
        assert one.told == [(b"first", 5)] and two.told == [(b"second", 6)]
        assert courier.threaded == 0 and courier._pool is None and thread_starts.tried == 2
        courier([(three, b"third")])  # the system has threads again
        assert courier.threaded == 1 and three.told == [(b"third", 5)]
        courier([(one, b"again")])  # (the thread's queue holds nothing of the failed starts)
        assert drain(b) == b"firstagain" and drain(d) == b"second" and drain(f) == b"third"
    finally:
        courier.close()


def test_while_no_thread_starts_publishes_go_from_the_hub_with_one_warning(
    pairs: Any, thread_starts: FailingStarts, caplog: pytest.LogCaptureFixture
) -> None:
    """One failed start and one warning, then a try every START_RETRY_SECONDS (aged here by
    hand), and a line when a start succeeds: not a failed start and a warning a publish."""
    ((a, b),) = pairs(1)
    thread_starts.left = 10**6
    courier = sendmany.Courier(thread_bytes=1)
    owner = Owner(a)

    def publishes(n: int) -> None:
        for _ in range(n):
            courier([(owner, b"x")])

    def age() -> None:
        assert courier._start_failed_at is not None
        courier._start_failed_at -= sendmany.START_RETRY_SECONDS

    def lines(level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == level]

    caplog.set_level(logging.INFO, logger="channelsd.sendmany")
    try:
        publishes(20)
        assert thread_starts.tried == 1 and len(lines(logging.WARNING)) == 1
        age()
        publishes(20)
        assert thread_starts.tried == 2 and len(lines(logging.WARNING)) == 1
        thread_starts.left = 0
        publishes(1)
        assert thread_starts.tried == 2 and courier.threaded == 0  # (not yet due)
        age()
        publishes(1)
        assert thread_starts.tried == 3 and courier.threaded == 1
        assert lines(logging.INFO) == ["courier thread started after a failed start"]
        assert owner.told == [(b"x", 1)] * 42 and drain(b) == b"x" * 42
    finally:
        courier.close()


def test_a_start_whose_first_task_fails_lets_its_thread_go(
    pairs: Any, pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread that started but whose first task raised: its pool is dropped with the
    thread let go, not left running past the close (an outside review)."""

    def broken() -> None:
        raise OSError("no")

    monkeypatch.setattr(sendmany, "_yield_to_ingest", broken)
    ((a, b),) = pairs(1)
    courier = sendmany.Courier(thread_bytes=1)
    owner = Owner(a)
    courier([(owner, b"x")])
    courier.close()
    assert owner.told == [(b"x", 1)] and drain(b) == b"x"
    assert len(pools.made) == 1 and pools.made[0].size == 0


def test_a_send_call_that_fails_tells_every_owner_an_error(pairs: Any) -> None:
    (a, b), (c, d) = pairs(2)

    def broken(fds: Sequence[int], datas: Sequence[bytes]) -> list[int]:
        raise MemoryError

    courier = sendmany.Courier(thread_bytes=1, send=broken)
    one, two = Owner(a), Owner(c)
    with pytest.raises(MemoryError):
        courier([(one, b"x"), (two, b"y")])
    wait_until(lambda: one.told and two.told, what="the owners told")
    assert one.told == [(b"x", -errno.EIO)] and two.told == [(b"y", -errno.EIO)]


# -- websocket sessions, written by the hub's courier -----------------------------------------


def same_file(fd: int, inode: int) -> bool:
    """Whether `fd` is still open on the file `inode` (closed, or the number reused: no)."""
    try:
        return os.fstat(fd).st_ino == inode
    except OSError as exc:
        assert exc.errno == errno.EBADF
        return False


def test_every_socket_of_a_crowd_gets_the_same_events_from_the_thread(
    switch: Any, make_daemon: Any
) -> None:
    h: Harness = make_daemon([switch], websocket={"max_sockets_per_token": 32})
    hub = h.daemon.ctx.websockets.hub
    hub._courier.thread_bytes = 1  # every publish from the native thread
    clients = [WsClient(ws_url(h)) for _ in range(24)]
    try:
        for c in clients:
            assert c.subscribe(token("admin1"), "acc1", "call.*.*")["status"] == "success"
        calls = []
        for _ in range(6):
            a, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
            calls.append(a)
            switch.hangup(a)
        for c in clients:
            wait_until(
                lambda c=c: set(call_ids(c, "CHANNEL_DESTROY")) >= set(calls), what="the ends"
            )
        gevent.sleep(0.3)
        events = [[m for m in c.raw if b'"action":"event"' in m[1]] for c in clients]
        assert all(e == events[0] for e in events)  # byte for byte
        assert hub._courier.threaded > 0
    finally:
        for c in clients:
            c.close()


def test_what_a_socket_did_not_take_goes_before_its_next_reply(
    switch: Any, make_daemon: Any
) -> None:
    """A slow reader's stream stays whole: the courier's partial send is finished by the
    session's writer before the reply to a request made meanwhile."""
    h: Harness = make_daemon([switch], websocket={"send_queue_bytes": 256 * 1024})
    service = h.daemon.ctx.websockets
    service.hub._courier.thread_bytes = 1
    slow, leftover = slow_subscriber(h)
    try:
        wait_until(lambda: len(service.subscriptions) == 1, what="subscribed")
        (session,) = service.sessions
        calls = []
        while not session._out and len(calls) < 300:
            a, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
            calls.append(a)
            switch.hangup(a)
            gevent.sleep(0.02)
        assert session._out, "the socket took everything: nothing was left to queue"
        ping = {"action": "ping", "request_id": "after"}
        slow.sendall(raw_frame(0x1, json.dumps(ping).encode()))
        gevent.sleep(0.2)
        conn = Connection(ConnectionType.CLIENT)
        conn.receive_data(leftover)
        messages: list[dict[str, Any]] = []
        part = ""
        slow.settimeout(2)
        while not any(m.get("request_id") == "after" for m in messages):
            chunk = slow.recv(65536)
            assert chunk, "closed before the reply"
            conn.receive_data(chunk)
            for event in conn.events():
                assert not isinstance(event, Ping)
                assert isinstance(event, TextMessage)
                part += event.data
                if event.message_finished:
                    messages.append(json.loads(part))  # each message whole: never cut
                    part = ""
        destroyed = [m["data"]["call_id"] for m in messages if m.get("name") == "CHANNEL_DESTROY"]
        assert set(calls) <= set(destroyed)  # every event of every call came first
        assert service.dropped_slow == 0
    finally:
        slow.close()


def one_subscriber(h: Harness, send: sendmany.SendEach) -> tuple[WsClient, Any]:
    """A websocket subscribed to acc1's call events, and its session, on a daemon whose every
    publish goes through `send` in the courier's thread."""
    service = h.daemon.ctx.websockets
    service.hub._courier.thread_bytes = 1
    service.hub._courier._send = send
    c = WsClient(ws_url(h))
    assert c.subscribe(token("admin1"), "acc1", "call.*.*")["status"] == "success"
    (session,) = service.sessions
    return c, session


def test_a_sessions_descriptor_is_closed_only_once_the_thread_is_done_with_it(
    switch: Any, make_daemon: Any
) -> None:
    h: Harness = make_daemon([switch])
    service = h.daemon.ctx.websockets
    gate = Gate()
    c, session = one_subscriber(h, gate)
    fd = session._line.fd
    socket_inode = os.fstat(fd).st_ino
    switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    wait_until(lambda: session._line.in_flight is not None, what="a publish in the thread")
    session.evict()  # as a full server drops it: at once, whatever its writer holds
    wait_until(lambda: session not in service.sessions, what="the session's end")
    assert session._line.in_flight is not None  # the thread still sends
    assert os.fstat(fd).st_ino == socket_inode  # and its descriptor is still the session's
    gate.open()
    wait_until(lambda: session._line.in_flight is None, timeout=5, what="the thread's answer")
    assert session._line.fd == -1
    c.close()
    # (gevent's os.close closes at the loop's next turn)
    wait_until(lambda: not same_file(fd, socket_inode), what="the descriptor closed")


def test_a_reply_made_while_a_publish_is_out_follows_all_of_it(
    switch: Any, make_daemon: Any
) -> None:
    """The session writes nothing while the courier's bytes are out, and what the socket did
    not take of them goes before what was queued meanwhile: a frame is never cut by another."""
    h: Harness = make_daemon([switch])

    def half(fds: Sequence[int], datas: Sequence[bytes]) -> list[int]:
        return c_send_each(fds, [d[: len(d) // 2] for d in datas])  # the socket takes half

    gate = Gate(half)
    c, session = one_subscriber(h, gate)
    try:
        a, b = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
        wait_until(lambda: session._line.in_flight is not None, what="a publish in the thread")
        c.send({"action": "ping", "request_id": "meanwhile"})
        wait_until(lambda: session._out, what="the reply queued while the publish is out")
        gate.open()
        wait_until(
            lambda: any(m.get("request_id") == "meanwhile" for m in c.messages), what="the reply"
        )
        assert c.closed is None  # every message was whole JSON in a whole frame
        names = [m.get("name") or m.get("data", {}).get("response") for m in c.messages]
        pong = names.index("pong")
        assert "CHANNEL_CREATE" in names[:pong]  # the publish that was out came first
        wait_until(lambda: set(call_ids(c)) >= {a, b}, what="both legs' events")
    finally:
        c.close()


def test_the_connection_budget_leaves_room_for_each_websockets_second_descriptor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Failed before the fix: the budget counted one descriptor a connection, and a websocket
    holds two (its socket, and the courier's duplicate)."""
    from channelsd import httpserver

    monkeypatch.setattr(httpserver.resource, "getrlimit", lambda _: (1024, 4096))
    without = httpserver.connection_budget(10_000, 1)
    with_sockets = httpserver.connection_budget(10_000, 1, pushed=512)
    assert without == (1024 - httpserver.FD_RESERVE - 4) * 8 // 9
    assert with_sockets == (1024 - httpserver.FD_RESERVE - 4 - 512) * 8 // 9
    assert with_sockets + 512 <= 1024 - httpserver.FD_RESERVE - 4


def test_a_stop_while_a_publish_is_in_the_thread_ends_cleanly(
    switch: Any, make_daemon: Any
) -> None:
    """The daemon's stop closes the hub, whose courier lets its thread go: the send on its
    way ends first, its sessions are told and let go of their descriptors."""
    h: Harness = make_daemon([switch])
    service = h.daemon.ctx.websockets
    courier = service.hub._courier
    gate = Gate()
    c, session = one_subscriber(h, gate)
    try:
        fd = session._line.fd
        inode = os.fstat(fd).st_ino
        switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
        wait_until(lambda: session._line.in_flight is not None, what="a publish in the thread")

        def open_once_closed() -> None:  # the stop begins while the publish is out
            wait_until(lambda: service.hub.closed, what="the hub's close")
            gate.open()

        opener = gevent.spawn(open_once_closed)
        h.daemon.stop()
        opener.get()
        wait_until(lambda: session._line.in_flight is None, timeout=5, what="the thread's answer")
        assert session._line.fd == -1 and courier._pool is None
        wait_until(lambda: not same_file(fd, inode), what="the descriptor closed")
        wait_until(lambda: c.closed is not None, what="the socket's end")
        assert c.closed[0] in (1001, 1006)
    finally:
        c.close()


def test_the_courier_thread_yields_to_ingest(pairs: Any) -> None:
    """Its nice value is sendmany.NICE above the process's, in the kernel's view."""
    ((a, b),) = pairs(1)
    courier = sendmany.Courier(thread_bytes=1)
    try:
        courier([(Owner(a), b"x")])
        tid = courier.thread_id
        assert tid is not None and tid != os.getpid()
        with open(f"/proc/self/task/{tid}/stat") as f:
            nice = int(f.read().rsplit(")", 1)[1].split()[16])  # field 19 of stat(5)
        assert nice == os.getpriority(os.PRIO_PROCESS, 0) + sendmany.NICE
    finally:
        courier.close()


def test_a_closed_courier_sends_from_the_hub_and_starts_no_thread(pairs: Any) -> None:
    """Failed before the fix: a publish still carried during a stop, after the hub's close,
    made a new thread that nothing let go."""
    ((a, b),) = pairs(1)
    courier = sendmany.Courier(thread_bytes=1)
    courier([(Owner(a), b"before")])
    assert courier.threaded == 1
    courier.close()
    owner = Owner(a)
    courier([(owner, b"after")])
    assert courier.threaded == 1 and courier._pool is None
    assert owner.told == [(b"after", 5)] and drain(b) == b"beforeafter"
