"""The ESL connection over a real socket: framing, timeouts, drops, and refusing line breaks."""

import time
from typing import Any

import gevent
import pytest

from channelsd.esl import CommandTimeout, ConnectionLost, ESLConnection, ESLError
from channelsd.events import EventParseError, parse_json, parse_plain

from conftest import wait_until


def connect(switch: Any, **kw: Any) -> ESLConnection:
    conn = ESLConnection("127.0.0.1", switch.port, kw.pop("password", "ClueCon"), **kw)
    conn.connect()
    return conn


def test_api_round_trip_and_json_events(switch: Any) -> None:
    seen: list[dict[str, Any]] = []
    events = connect(switch, on_event=lambda event, _body: seen.append(event))
    reply = events.command("event json CHANNEL_CREATE CHANNEL_DESTROY")
    assert reply.data == "+OK event listener enabled json"
    cmd = connect(switch)
    assert cmd.api("global_getvar core_uuid").strip() == switch.core_uuid
    a, b = switch.originate(dest="9000", variables={"account_id": "acc1"})
    wait_until(lambda: {e["Unique-ID"] for e in seen} >= {a, b})
    create = next(e for e in seen if e["Unique-ID"] == a)
    assert create["Event-Name"] == "CHANNEL_CREATE"
    assert create["variable_account_id"] == "acc1"
    events.goodbye()
    cmd.goodbye()
    assert events.closed.is_set() and cmd.closed.is_set()


def test_a_commands_answer_is_not_held_behind_the_events_it_caused(switch: Any) -> None:
    # uuid_kill's reply and its hang-up events arrive together; the caller (an HTTP request
    # waiting to answer) must get the reply before the event reader parses any of them.
    seen: list[str] = []
    events = connect(switch, on_event=lambda event, _body: seen.append(event["Event-Name"]))
    events.command("event json ALL")
    cmd = connect(switch)
    for _ in range(5):
        a, _b = switch.originate(dest="9000", variables={"account_id": "acc1"})
        wait_until(lambda a=a: cmd.api(f"uuid_exists {a}") == "true")
        gevent.sleep(0.05)  # the originate's own events applied
        before = len(seen)
        assert cmd.api(f"uuid_kill {a}").startswith("+OK")
        assert len(seen) == before  # nothing parsed while the answer waited
        wait_until(lambda before=before: "CHANNEL_DESTROY" in seen[before:])
    events.goodbye()
    cmd.goodbye()


def test_a_wrong_password_is_an_error_not_a_hang(switch: Any) -> None:
    with pytest.raises(ESLError, match="password"):
        connect(switch, password="wrong", timeout=2)


def test_nothing_listening_is_an_error(switch: Any) -> None:
    port = switch.port
    switch.stop()
    with pytest.raises(ESLError):
        ESLConnection("127.0.0.1", port, "ClueCon", timeout=1).connect()


def test_a_line_break_never_reaches_the_switch(switch: Any) -> None:
    cmd = connect(switch)
    before = list(switch.received)
    for bad in ("uuid_kill x\n\napi system rm", "uuid_kill x\r\n", "a\x00b", "a\u2028b"):
        with pytest.raises(ValueError):
            cmd.api(bad)
    assert switch.received == before
    assert cmd.alive  # refusing a command does not break the connection
    assert cmd.api("uuid_exists 00000000-0000-0000-0000-000000000000") == "false"


def test_a_command_without_reply_times_out_and_closes(switch: Any) -> None:
    cmd = connect(switch)
    switch.hang_commands = True
    began = time.monotonic()
    with pytest.raises(CommandTimeout):
        cmd.api("status", timeout=0.3)
    assert time.monotonic() - began < 5  # bounded: the call returned, it did not hang
    assert cmd.closed.is_set()


def test_commands_in_flight_fail_when_the_socket_drops(switch: Any) -> None:
    cmd = connect(switch)
    switch.hang_commands = True
    waiters = [gevent.spawn(cmd.api, "status", 30) for _ in range(3)]
    # FreeSWITCH reads a connection's commands one at a time: the first one blocks the rest.
    wait_until(lambda: any(c == "api status" for _, c in switch.received))
    gevent.sleep(0.05)
    assert not any(w.ready() for w in waiters)
    switch.drop_connections()
    gevent.joinall(waiters, timeout=5)
    assert all(isinstance(w.exception, ConnectionLost) for w in waiters)


def test_commands_are_pipelined_and_paired_in_order(switch: Any) -> None:
    cmd = connect(switch)
    a, _ = switch.originate(dest="9000", variables={"account_id": "acc1"})
    jobs = [
        gevent.spawn(cmd.api, f"uuid_getvar {a} account_id" if i % 2 else "uuid_exists nope")
        for i in range(40)
    ]
    gevent.joinall(jobs, timeout=10)
    assert [j.value for j in jobs] == ["false" if i % 2 == 0 else "acc1" for i in range(40)]


class _CountingWrites:
    """The connection's socket, with its writes counted (gevent's sendall is read-only)."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.writes: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.writes.append(data)
        return self.sock.send(data)

    def sendall(self, data: bytes) -> None:
        self.writes.append(data)
        self.sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def test_a_pipeline_is_one_write_answered_in_order(switch: Any) -> None:
    cmd = connect(switch)
    a, _ = switch.originate(dest="9000", variables={"account_id": "acc1"})
    texts = [f"api uuid_getvar {a} account_id" if i % 2 else "api uuid_exists x" for i in range(40)]
    cmd.sock = counting = _CountingWrites(cmd.sock)
    replies = cmd.pipeline(texts)
    assert len(counting.writes) == 1  # written at once, before the first reply is asked for
    assert [r.data for r in replies] == ["false" if i % 2 == 0 else "acc1" for i in range(40)]
    assert cmd.api("uuid_exists nope") == "false"  # still paired after it


def test_a_pipeline_refuses_a_line_break_before_writing_anything(switch: Any) -> None:
    cmd = connect(switch)
    before = list(switch.received)
    with pytest.raises(ValueError):
        cmd.pipeline(["api status", "api uuid_kill x\n\napi system rm"])
    assert switch.received == before and cmd.alive


def test_a_pipeline_past_its_deadline_times_out_and_closes(switch: Any) -> None:
    cmd = connect(switch)
    switch.hang_commands = True
    replies = cmd.pipeline(["api status", "api status"], timeout=0.3)
    with pytest.raises(CommandTimeout):
        next(replies)
    assert cmd.closed.is_set()


def test_a_pipeline_cut_by_a_drop_fails_at_the_reply_it_stopped_at(switch: Any) -> None:
    cmd = connect(switch)
    switch.hang_commands = True
    replies = cmd.pipeline(["api status"] * 3, timeout=30)
    wait_until(lambda: any(c == "api status" for _, c in switch.received))
    switch.drop_connections()
    with pytest.raises(ConnectionLost):
        next(replies)
    with pytest.raises(ConnectionLost):
        cmd.pipeline(["api status"])  # and nothing more is written on a closed connection


def test_plain_parser_splits_before_decoding() -> None:
    # A caller-controlled value with an encoded newline must stay one value (greenswitch's
    # decode-then-split turns it into a forged Unique-ID header).
    body = (
        b"Event-Name: CHANNEL_CREATE\n"
        b"Unique-ID: real-uuid\n"
        b"Caller-Caller-ID-Name: Mallory%0AUnique-ID%3A%20victim\n"
        b"variable_empty: _undef_\n"
        b"variable_multi: ARRAY%3A%3Aa%7C%3Ab\n"
        b"Event-Date-Local: 2026-11-28%2006%3A30%3A15\n\n"
    )
    event = parse_plain(body)
    assert event["Unique-ID"] == "real-uuid"
    assert event["Caller-Caller-ID-Name"] == "Mallory\nUnique-ID: victim"
    assert event["variable_empty"] == ""
    assert event["variable_multi"] == ["a", "b"]
    assert event["Event-Date-Local"] == "2026-11-28 06:30:15"


def test_plain_parser_keeps_a_background_job_body() -> None:
    body = b"Event-Name: BACKGROUND_JOB\nJob-UUID: j1\nContent-Length: 6\n\n+OK x\n"
    event = parse_plain(body)
    assert event["_body"] == "+OK x\n" and event["Job-UUID"] == "j1"


@pytest.mark.parametrize("body", [b"{", b"[1]", b"\xff\xfe", b'"str"'])
def test_json_parser_rejects_what_is_not_an_event(body: bytes) -> None:
    with pytest.raises(EventParseError):
        parse_json(body)


def test_commands_go_out_at_once_not_behind_nagle(switch: Any) -> None:
    """A command is one small write; with Nagle, one written while another is unanswered
    would wait for the switch's ACK of the first (its reply, or a 40 ms delayed ACK)."""
    import socket

    conn = connect(switch)
    assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    conn.goodbye()
