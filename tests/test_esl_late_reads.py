"""A reply that reached channelsd's socket in time is never late because the hub was busy.

The switch here is a native thread with a blocking socket (outside the hub): it answers while
the test holds the hub (a blocking sleep), as FreeSWITCH answers while channelsd's process is
busy elsewhere. When the hub runs again, the reply is in the socket, unread, and the command's
deadline has passed by the clock. The connection's reader is woken with the timer of the
waiting command; whichever runs first, the reply counts as arrived (a deadline measures the
switch, not the hub), as the HTTP server's reads do (test_floods' late reads)."""

from __future__ import annotations

import json
import socket as _socket_module
from typing import Any

import gevent
import pytest
from gevent import monkey

from channelsd.esl import CommandTimeout, ESLConnection

real_socket = monkey.get_original("socket", "socket")
real_sleep = monkey.get_original("time", "sleep")
start_os_thread = monkey.get_original("_thread", "start_new_thread")


class ThreadSwitch:
    """A minimal ESL server in a native thread: authenticates, then answers each command
    with `before` (bytes the switch sends first: events) and the command's reply, after
    `delay[command]` seconds (FreeSWITCH answers a connection's commands in turn)."""

    def __init__(
        self, before: bytes = b"", answer: bool = True, delay: dict[bytes, float] | None = None
    ) -> None:
        self.listener = real_socket(_socket_module.AF_INET, _socket_module.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.before = before
        self.answer = answer
        self.delay = delay or {}
        self.commands: list[bytes] = []
        start_os_thread(self._serve, ())

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.sendall(b"Content-Type: auth/request\n\n")
        buf = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
            while b"\n\n" in buf:
                line, buf = buf.split(b"\n\n", 1)
                self.commands.append(line)
                if line.startswith(b"auth "):
                    conn.sendall(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
                    continue
                real_sleep(self.delay.get(line, 0.0))
                body = b"+OK " + line
                reply = b"Content-Type: api/response\nContent-Length: %d\n\n" % len(body) + body
                conn.sendall(self.before + (reply if self.answer else b""))


def _events(n: int, size: int = 200) -> bytes:
    out = []
    for i in range(n):
        body = json.dumps(
            {"Event-Name": "CHANNEL_CREATE", "Unique-ID": f"u{i}", "pad": "x" * size}
        ).encode()
        out.append(b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body)
    return b"".join(out)


def _connect(sw: ThreadSwitch, seen: list[Any]) -> ESLConnection:
    conn = ESLConnection(
        "127.0.0.1", sw.port, "ClueCon", timeout=0.3, on_event=lambda e, _b: seen.append(e)
    )
    conn.connect()
    return conn


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
        conn.close()


def test_a_deadline_runs_again_from_a_reply_read_late() -> None:
    """Two commands in turn; the first one's reply arrives while the hub is held, the second
    one's after it. The second's deadline runs from the first reply (the switch was busy
    with it), and that reply counts from when it arrived, not from when it was read."""
    seen: list[Any] = []
    sw = ThreadSwitch(before=_events(500), delay={b"api second": 1.1})
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
        conn.close()


@pytest.mark.parametrize("held", [False, True])
def test_a_switch_that_never_answers_is_still_late(held: bool) -> None:
    """The grace is for the bytes that had arrived: a switch that sends events but never
    the reply still times the command out, the hub held or not."""
    seen: list[Any] = []
    sw = ThreadSwitch(before=_events(500))
    conn = _connect(sw, seen)
    sw.answer = False
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
        conn.close()
