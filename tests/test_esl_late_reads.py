"""A reply that reached channelsd's socket in time is never late because the hub was busy,
and a switch that keeps bytes coming without answering gains at most one more deadline.

The switch here is a native thread with a real blocking socket (outside the hub): it answers
while the test holds the hub (a blocking sleep), as FreeSWITCH answers while channelsd's
process is busy elsewhere. When the hub runs again, the reply is in the socket, unread, and
the command's deadline has passed by the clock. The connection's reader is woken with the
timer of the waiting command; whichever runs first, the reply counts as arrived (a deadline
measures the switch, not the hub), as the HTTP server's reads do (test_floods' late reads).
The hostile behaviours (dribbling, a frame that never ends, floods, a close or a dead reader
while a waiter catches up) came from an outside attack on the catch-up; all held."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent
import pytest
from gevent import monkey

from channelsd.esl import CommandTimeout, ConnectionLost, ESLConnection

real_socket = monkey.get_original("socket", "socket")
real_sleep = monkey.get_original("time", "sleep")
start_os_thread = monkey.get_original("_thread", "start_new_thread")

LIMIT = 0.3  # every command's deadline here
# A command against a switch that keeps sending ends within its deadline, the catch-up's
# (another deadline) and a shared machine's slack; the hostile switches send for FLOOD_FOR,
# well beyond it, so a wait that lasted as long as bytes came would not pass.
BOUND = 2 * LIMIT + 1.5
FLOOD_FOR = 6.0

Behaviour = Callable[["ThreadSwitch", Any, bytes], None]


class ThreadSwitch:
    """An ESL server in a native thread with a real blocking socket: authenticates, then
    hands each command, in turn as FreeSWITCH takes them, to `behaviour(switch, conn, line)`
    (by default: the events `before`, then the reply)."""

    def __init__(self, behaviour: Behaviour | None = None, before: bytes = b"") -> None:
        self.listener = real_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.behaviour = behaviour or answer
        self.before = before
        self.delay: dict[bytes, float] = {}
        self.stopped = False
        start_os_thread(self._serve, ())

    def _serve(self) -> None:
        accepted, _ = self.listener.accept()
        # accept() wraps the descriptor in the patched socket class: unwrapped, a blocking
        # send in this native thread blocks the thread, not a hub
        conn = real_socket(fileno=accepted.detach())
        conn.setblocking(True)
        with contextlib.suppress(OSError):
            conn.sendall(b"Content-Type: auth/request\n\n")
            buf = b""
            while not self.stopped:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\n\n" in buf:
                    line, buf = buf.split(b"\n\n", 1)
                    if line.startswith(b"auth "):
                        conn.sendall(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
                        continue
                    real_sleep(self.delay.get(line, 0.0))
                    self.behaviour(self, conn, line)

    def stop(self) -> None:
        self.stopped = True
        with contextlib.suppress(OSError):
            self.listener.close()


def reply(line: bytes) -> bytes:
    body = b"+OK " + line
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(body) + body


def answer(sw: ThreadSwitch, conn: Any, line: bytes) -> None:
    conn.sendall(sw.before + reply(line))


def never_answer(sw: ThreadSwitch, conn: Any, line: bytes) -> None:
    conn.sendall(sw.before)


def _events(n: int, size: int = 200) -> bytes:
    out = []
    for i in range(n):
        body = json.dumps(
            {"Event-Name": "CHANNEL_CREATE", "Unique-ID": f"u{i}", "pad": "x" * size}
        ).encode()
        out.append(b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body)
    return b"".join(out)


_FLOOD = _events(200)


def dribble(sw: ThreadSwitch, conn: Any, line: bytes) -> None:
    """A header block that never ends, a byte a millisecond."""
    until = time.monotonic() + FLOOD_FOR
    while not sw.stopped and time.monotonic() < until:
        conn.sendall(b"X")
        real_sleep(0.001)


def huge_frame(sw: ThreadSwitch, conn: Any, line: bytes) -> None:
    """A reply announcing 60 MB whose body keeps coming and never completes."""
    conn.sendall(b"Content-Type: api/response\nContent-Length: 60000000\n\n")
    until = time.monotonic() + FLOOD_FOR
    while not sw.stopped and time.monotonic() < until:
        conn.sendall(b"x" * 65536)
        real_sleep(0.001)


def flood(sw: ThreadSwitch, conn: Any, line: bytes) -> None:
    """Events as fast as the socket takes them, and no reply."""
    until = time.monotonic() + FLOOD_FOR
    while not sw.stopped and time.monotonic() < until:
        conn.sendall(_FLOOD)


def flood_then_late_reply(sw: ThreadSwitch, conn: Any, line: bytes) -> None:
    """Events without pause, the reply only after the deadline, then events again."""
    until = time.monotonic() + 2 * LIMIT
    while not sw.stopped and time.monotonic() < until:
        conn.sendall(_FLOOD)
    conn.sendall(reply(line))
    flood(sw, conn, line)


def _connect(sw: ThreadSwitch, seen: list[Any] | None = None, **kw: Any) -> ESLConnection:
    on_event = kw.pop("on_event", None) or (
        lambda e, _b: seen.append(e) if seen is not None else None
    )
    conn = ESLConnection("127.0.0.1", sw.port, "ClueCon", timeout=LIMIT, on_event=on_event)
    conn.connect()
    return conn


def _outcome(g: gevent.Greenlet, timeout: float = 15.0) -> Any:
    try:
        return g.get(timeout=timeout)
    except gevent.Timeout:
        return "HUNG"
    except Exception as exc:  # the test asserts on the kind
        return type(exc)


@pytest.mark.parametrize("events_first", [0, 1, 500])
def test_a_reply_in_the_socket_when_the_hub_comes_back_is_not_late(events_first: int) -> None:
    seen: list[Any] = []
    sw = ThreadSwitch(before=_events(events_first))
    conn = _connect(sw, seen)
    try:
        asked = gevent.spawn(conn.api, "status")
        gevent.sleep(0)  # the command is written; its deadline runs from now
        real_sleep(1.0)  # the hub held past the deadline while the switch answers
        assert asked.get(timeout=5) == "+OK api status"
        assert len(seen) == events_first
        assert not conn.closed.is_set()
    finally:
        sw.stop()
        conn.close()


def test_a_pipeline_answered_while_the_hub_was_held_is_not_late() -> None:
    seen: list[Any] = []
    sw = ThreadSwitch(before=_events(20))
    conn = _connect(sw, seen)
    try:
        texts = [f"api uuid_dump u{i}" for i in range(50)]
        asked = gevent.spawn(lambda: list(conn.pipeline(texts)))
        gevent.sleep(0)
        real_sleep(1.0)
        assert [r.data for r in asked.get(timeout=10)] == [f"+OK {t}" for t in texts]
        assert not conn.closed.is_set()
    finally:
        sw.stop()
        conn.close()


def test_a_deadline_runs_again_from_a_reply_read_late() -> None:
    """Two commands in turn; the first one's reply arrives while the hub is held, the second
    one's after it. The second's deadline runs from the first reply (the switch was busy
    with it), and that reply counts from when it arrived, not from when it was read."""
    seen: list[Any] = []
    sw = ThreadSwitch(before=_events(500))
    sw.delay[b"api second"] = 1.1
    conn = _connect(sw, seen)
    try:
        first = gevent.spawn(conn.api, "first")
        second = gevent.spawn(conn.api, "second")
        gevent.sleep(0)  # both written; the switch answers the first at once
        real_sleep(1.0)
        assert first.get(timeout=5) == "+OK api first"
        assert second.get(timeout=5) == "+OK api second"
        assert not conn.closed.is_set()
    finally:
        sw.stop()
        conn.close()


@pytest.mark.parametrize("held", [False, True])
def test_a_switch_that_never_answers_is_still_late(held: bool) -> None:
    """The grace is for the bytes that had arrived: a switch that sends events but never
    the reply still times the command out, the hub held or not."""
    seen: list[Any] = []
    sw = ThreadSwitch(never_answer, before=_events(500))
    conn = _connect(sw, seen)
    try:
        asked = gevent.spawn(conn.api, "status")
        gevent.sleep(0)
        if held:
            real_sleep(1.0)
        with pytest.raises(CommandTimeout):
            asked.get(timeout=5)
        assert len(seen) == 500  # what arrived was read before the deadline was called
        assert conn.closed.is_set()
    finally:
        sw.stop()
        conn.close()


@pytest.mark.parametrize(
    "behaviour",
    [dribble, huge_frame, flood, flood_then_late_reply],
    ids=["dribble", "huge_frame", "flood", "flood_then_late_reply"],
)
@pytest.mark.parametrize("held", [0.0, 1.0], ids=["free", "held"])
def test_a_switch_that_keeps_bytes_coming_gains_at_most_a_deadline(
    behaviour: Behaviour, held: float
) -> None:
    """The hub free, or held for a second while the switch keeps sending: timed from the
    hub's release, the command still ends within about two deadlines, closed."""
    sw = ThreadSwitch(behaviour)
    conn = _connect(sw)
    try:
        asked = gevent.spawn(conn.api, "status")
        gevent.sleep(0)
        real_sleep(held)
        began = time.monotonic()
        outcome = _outcome(asked)
        took = time.monotonic() - began
        assert outcome is CommandTimeout, outcome
        assert took < BOUND, took
        assert conn.closed.is_set()
    finally:
        sw.stop()
        conn.close()


def test_a_close_while_catching_up_ends_the_wait() -> None:
    """The reader is slow (its handler sleeps), 500 events ahead of the reply: the waiter
    is catching up when another greenlet closes the connection; it ends with the close."""
    sw = ThreadSwitch(before=_events(500))
    conn = _connect(sw, on_event=lambda e, b: gevent.sleep(0.02))
    try:
        asked = gevent.spawn(conn.api, "status")
        gevent.sleep(LIMIT + 0.1)  # past the deadline: catching up
        assert conn._catching_up == 1
        conn.close("closed by the test")
        assert _outcome(asked) is ConnectionLost
    finally:
        sw.stop()
        conn.close()


def test_a_reader_that_dies_while_a_waiter_catches_up_leaves_it_bounded() -> None:
    """The reader greenlet is killed (no close()) while a waiter catches up: the waiter
    still ends at its give-up, and the connection is closed."""
    sw = ThreadSwitch(before=_events(500))
    conn = _connect(sw, on_event=lambda e, b: gevent.sleep(0.02))
    try:
        began = time.monotonic()
        asked = gevent.spawn(conn.api, "status")
        gevent.sleep(LIMIT + 0.1)
        conn._receive_events_greenlet.kill(block=False)
        assert _outcome(asked) is CommandTimeout
        assert time.monotonic() - began < BOUND
        assert conn.closed.is_set()
    finally:
        sw.stop()
        conn.close()


def test_goodbye_to_a_flooding_switch_that_never_answers_is_bounded() -> None:
    sw = ThreadSwitch(flood)
    conn = _connect(sw)
    try:
        began = time.monotonic()
        assert _outcome(gevent.spawn(conn.goodbye, LIMIT)) is None
        assert time.monotonic() - began < BOUND
        assert conn.closed.is_set()
    finally:
        sw.stop()
        conn.close()


def test_unread_of_a_closed_connection_is_nothing() -> None:
    sw = ThreadSwitch(before=_events(500))
    conn = _connect(sw)
    conn.close()
    sw.stop()
    assert conn.unread() == 0
