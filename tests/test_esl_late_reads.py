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
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from gevent import monkey

from channelsd.esl import CommandTimeout, ConnectionLost, ESLConnection

real_socket = monkey.get_original("socket", "socket")
real_sleep = monkey.get_original("time", "sleep")
start_os_thread = monkey.get_original("_thread", "start_new_thread")

LIMIT = 0.3  # every command's deadline here
# How long the hostile switches keep sending: far beyond a deadline and the catch-up's, so
# that a command still waiting when they stop was kept waiting by their bytes.
FLOOD_FOR = 10.0

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
        self.finished = False  # the behaviour of the last command ran to its end
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
                    self.finished = False
                    self.behaviour(self, conn, line)
                    self.finished = not self.stopped

    def send_for(
        self, conn: Any, piece: bytes, seconds: float = FLOOD_FOR, pause: float = 0
    ) -> None:
        """`piece` again and again for `seconds`, or until stopped."""
        until = time.monotonic() + seconds
        while not self.stopped and time.monotonic() < until:
            conn.sendall(piece)
            if pause:
                real_sleep(pause)

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
    sw.send_for(conn, b"X", pause=0.001)


def huge_frame(sw: ThreadSwitch, conn: Any, line: bytes) -> None:
    """A reply announcing 60 MB whose body keeps coming and never completes."""
    conn.sendall(b"Content-Type: api/response\nContent-Length: 60000000\n\n")
    sw.send_for(conn, b"x" * 65536, pause=0.001)


def flood(sw: ThreadSwitch, conn: Any, line: bytes) -> None:
    """Events as fast as the socket takes them, and no reply."""
    sw.send_for(conn, _FLOOD)


def flood_then_late_reply(sw: ThreadSwitch, conn: Any, line: bytes) -> None:
    """Events without pause, the reply only after the deadline, then events again."""
    sw.send_for(conn, _FLOOD, 2 * LIMIT)
    conn.sendall(reply(line))
    sw.send_for(conn, _FLOOD)


@contextlib.contextmanager
def connected(
    behaviour: Behaviour | None = None, before: bytes = b"", on_event: Any = None
) -> Iterator[tuple[ThreadSwitch, ESLConnection, list[Any]]]:
    """A switch, a connection to it and the events it delivered (unless `on_event` takes
    them); both ended afterwards."""
    sw = ThreadSwitch(behaviour, before)
    seen: list[Any] = []
    conn = ESLConnection(
        "127.0.0.1",
        sw.port,
        "ClueCon",
        timeout=LIMIT,
        on_event=on_event or (lambda e, _b: seen.append(e)),
    )
    try:
        conn.connect()
        yield sw, conn, seen
    finally:
        sw.stop()
        conn.close()


def _outcome(g: gevent.Greenlet, timeout: float = 15.0) -> Any:
    try:
        return g.get(timeout=timeout)
    except gevent.Timeout:
        return "HUNG"
    except Exception as exc:  # the test asserts on the kind
        return type(exc)


@pytest.mark.parametrize("events_first", [0, 1, 500])
def test_a_reply_in_the_socket_when_the_hub_comes_back_is_not_late(events_first: int) -> None:
    with connected(before=_events(events_first)) as (_, conn, seen):
        asked = gevent.spawn(conn.api, "status")
        gevent.sleep(0)  # the command is written; its deadline runs from now
        real_sleep(1.0)  # the hub held past the deadline while the switch answers
        assert asked.get(timeout=5) == "+OK api status"
        assert len(seen) == events_first
        assert not conn.closed.is_set()


def test_a_pipeline_answered_while_the_hub_was_held_is_not_late() -> None:
    with connected(before=_events(20)) as (_, conn, _seen):
        texts = [f"api uuid_dump u{i}" for i in range(50)]
        asked = gevent.spawn(lambda: list(conn.pipeline(texts)))
        gevent.sleep(0)
        real_sleep(1.0)
        assert [r.data for r in asked.get(timeout=10)] == [f"+OK {t}" for t in texts]
        assert not conn.closed.is_set()


def test_a_deadline_runs_again_from_a_reply_read_late() -> None:
    """Two commands in turn; the first one's reply arrives while the hub is held, the second
    one's after it. The second's deadline runs from the first reply (the switch was busy
    with it), and that reply counts from when it arrived, not from when it was read."""
    with connected(before=_events(500)) as (sw, conn, _seen):
        sw.delay[b"api second"] = 1.1
        first = gevent.spawn(conn.api, "first")
        second = gevent.spawn(conn.api, "second")
        gevent.sleep(0)  # both written; the switch answers the first at once
        real_sleep(1.0)
        assert first.get(timeout=5) == "+OK api first"
        assert second.get(timeout=5) == "+OK api second"
        assert not conn.closed.is_set()


@pytest.mark.parametrize("held", [False, True])
def test_a_switch_that_never_answers_is_still_late(held: bool) -> None:
    """The grace is for the bytes that had arrived: a switch that sends events but never
    the reply still times the command out, the hub held or not."""
    with connected(never_answer, before=_events(500)) as (_, conn, seen):
        asked = gevent.spawn(conn.api, "status")
        gevent.sleep(0)
        if held:
            real_sleep(1.0)
        with pytest.raises(CommandTimeout):
            asked.get(timeout=5)
        assert len(seen) == 500  # what arrived was read before the deadline was called
        assert conn.closed.is_set()


@pytest.mark.parametrize(
    "behaviour",
    [dribble, huge_frame, flood, flood_then_late_reply],
    ids=["dribble", "huge_frame", "flood", "flood_then_late_reply"],
)
@pytest.mark.parametrize("held", [0.0, 1.0], ids=["free", "held"])
def test_a_switch_that_keeps_bytes_coming_gains_nothing_by_it(
    behaviour: Behaviour, held: float
) -> None:
    """The hub free, or held for a second while the switch keeps sending: the command times
    out, its connection closed, while the switch is still sending (FLOOD_FOR): the bytes
    that keep coming do not keep it waiting."""
    with connected(behaviour) as (sw, conn, _seen):
        asked = gevent.spawn(conn.api, "status")
        gevent.sleep(0)
        real_sleep(held)
        outcome = _outcome(asked)
        still_sending = not sw.finished
        assert outcome is CommandTimeout, outcome
        assert still_sending
        assert conn.closed.is_set()


def test_a_close_while_catching_up_ends_the_wait() -> None:
    """The reader is slow (its handler sleeps), 500 events ahead of the reply: the waiter
    is catching up when another greenlet closes the connection; it ends with the close."""
    slow = lambda e, b: gevent.sleep(0.02)  # noqa: E731
    with connected(before=_events(500), on_event=slow) as (_, conn, _seen):
        asked = gevent.spawn(conn.api, "status")
        gevent.sleep(LIMIT + 0.1)  # past the deadline: catching up
        assert conn._catching_up == 1
        conn.close("closed by the test")
        assert _outcome(asked) is ConnectionLost


def test_a_reader_that_dies_while_a_waiter_catches_up_leaves_it_bounded() -> None:
    """The reader greenlet is killed (no close()) while a waiter catches up: the waiter
    still ends, at its give-up (not HUNG), and the connection is closed."""
    slow = lambda e, b: gevent.sleep(0.02)  # noqa: E731
    with connected(before=_events(500), on_event=slow) as (_, conn, _seen):
        asked = gevent.spawn(conn.api, "status")
        gevent.sleep(LIMIT + 0.1)
        assert conn._catching_up == 1
        conn._receive_events_greenlet.kill(block=False)
        assert _outcome(asked) is CommandTimeout
        assert conn.closed.is_set()


def test_goodbye_to_a_flooding_switch_that_never_answers_is_bounded() -> None:
    with connected(flood) as (sw, conn, _seen):
        assert _outcome(gevent.spawn(conn.goodbye, LIMIT)) is None
        assert not sw.finished  # ended while the switch was still sending
        assert conn.closed.is_set()


def test_unread_of_a_closed_connection_is_nothing() -> None:
    with connected(before=_events(500)) as (_, conn, _seen):
        conn.close()
        assert conn.unread() == 0
