"""A reconcile's pipelined `uuid_dump`s against a slow, hostile or broken switch (outside attack
on issue #16): every answer applied to the channel it was asked about, every wait bounded,
a slow switch not taken for a dead one, and a listing that cannot hold the hub.

Each test below failed on the code it was written against (41900f6); each says why.
"""

from __future__ import annotations

import sys
from typing import Any

import gevent
import pytest
from test_esl_limits import HANG, Client, Peer

from channelsd import showchannels
from channelsd.esl import CommandTimeout, ConnectionLost, ESLConnection
from channelsd.showchannels import listed_uuids

from conftest import wait_until

ACC = {"account_id": "acc1", "owner_id": "user1"}


@pytest.fixture
def peer() -> Any:
    p = Peer()
    yield p
    p.close()


def connect(switch: Any) -> ESLConnection:
    conn = ESLConnection("127.0.0.1", switch.port, "ClueCon", timeout=HANG)
    conn.connect()
    return conn


# -- a slow switch is not a dead one -----------------------------------------------------------


def test_commands_queued_behind_a_slow_switchs_answers_are_not_late(switch: Any) -> None:
    """Failed: a pipeline's deadline ran from its write for all its commands, and a command's
    from its own write, however many were queued in front of it on the connection. A switch
    answering each command in a tenth of the deadline failed the 20-command pipeline and the
    action queued behind it, and the connection was torn down."""
    cmd = connect(switch)
    switch.reply_delay = 0.05
    replies = cmd.pipeline(["api uuid_exists x"] * 20, timeout=0.5)
    behind = gevent.spawn(cmd.api, "uuid_exists y", 0.5)
    assert [r.data for r in replies] == ["false"] * 20
    assert behind.get(timeout=HANG) == "false"
    assert cmd.alive


def test_a_switch_slow_on_every_dump_is_reconciled_not_reconnected_forever(
    switch: Any, make_daemon: Any
) -> None:
    """Failed: the batch written ahead (16 dumps) waits behind the batch before it, but its
    deadline ran from its write: 32 answers had to come within one command_timeout where the
    16-wide pool before #16 needed 16. A switch taking 1/20 of the deadline per dump had its
    connection reset at every reconcile (13 resets in 30 s with 120 channels; never ready)."""
    calls = [switch.originate(dest="9000", variables=ACC) for _ in range(20)]
    switch.reply_delay = 0.1  # command_timeout is 2 s: 16 answers take 1.6 s, 32 take 3.2 s
    h = make_daemon([switch], wait=False)
    node = h.node()
    wait_until(lambda: node.state == "ready", timeout=HANG, what="the first reconcile")
    assert node.reconnects == 0, node.last_error
    assert set(h.table.node_uuids("fs1")) == {u for call in calls for u in call}


# -- writes ------------------------------------------------------------------------------------


def test_a_pipeline_whose_write_the_switch_never_takes_times_out_and_closes(peer: Peer) -> None:
    """Failed: the pipeline's write had no deadline (command()'s had): a switch that stops
    reading blocked it in sendall for good, holding the connection's send lock."""
    conn = Client(peer).conn
    hung = AssertionError("the write hung")
    with gevent.Timeout(10, hung), pytest.raises(CommandTimeout):  # (10: a bound, not a speed)
        conn.pipeline(["api " + "a" * 1_000_000] * 16, timeout=0.5)
    assert conn.closed.is_set() and "not taken" in conn.close_reason


def test_a_command_waiting_for_the_send_lock_when_the_connection_drops_fails_at_once(
    peer: Peer,
) -> None:
    """Failed: `connected` was checked before waiting for the send lock. A command that got the
    lock after the connection closed queued its result on the emptied list, its write failed
    (close() then did nothing: closed already) and nobody ever answered it: it waited its whole
    deadline and ended as a timeout, not as the lost connection it was."""
    conn = Client(peer).conn
    writer = gevent.spawn(conn.pipeline, ["api " + "a" * 1_000_000] * 16, HANG)
    gevent.sleep(0.2)  # its write fills the socket: it holds the lock
    assert not writer.ready()
    queued = gevent.spawn(conn.api, "status", HANG)
    gevent.sleep(0.1)
    peer.close()  # the switch goes away
    queued.join(timeout=10)  # a bound against the hang, far below HANG
    assert queued.ready(), "the command behind the lock waited for its deadline"
    assert isinstance(queued.exception, ConnectionLost)
    writer.join(timeout=10)


# -- answers paired with their questions -------------------------------------------------------


def test_a_dump_about_another_channel_is_applied_to_neither(switch: Any, make_daemon: Any) -> None:
    """Failed: a dump was hydrated under its own Unique-ID, not the uuid asked, and the check
    that nothing newer was heard since the question was made on the row asked about. A stale
    dump of B given as the answer about A turned B back to its old account. Such an answer
    means the replies are out of step with the questions (or the switch lies); "-ERR No such
    channel" answers name no channel, so none after it can be trusted: the connection is
    reset and says why."""
    a, _ = switch.originate(dest="9003", variables=ACC)
    b, _ = switch.originate(dest="9003", variables=ACC)
    h = make_daemon([switch])
    node = h.node()
    stale_b = switch.api.execute("uuid_dump", f"{b} json")
    switch.set_variable(b, "account_id", "acc2")  # B moved on, and the table heard it
    wait_until(lambda: h.table.row("fs1", b).account_id == "acc2", what="the setvar")
    answer = switch.api.execute

    def lying(command: str, arg: str) -> bytes:
        if command == "uuid_dump" and arg.startswith(a):
            return stale_b
        return answer(command, arg)

    switch.api.execute = lying
    switch.hide_from_listing = {a}  # so that the reconcile asks about A
    reconnects = node.reconnects
    node.request_reconcile()
    wait_until(lambda: node.reconnects > reconnects, what="the reset")
    assert "another channel" in node.last_error
    assert h.table.row("fs1", b).account_id == "acc2"
    assert h.table.row("fs1", a) is not None  # unknown, never gone
    switch.api.execute = answer
    switch.hide_from_listing = set()
    wait_until(lambda: node.state == "ready", what="back once the switch answers right")
    assert h.table.row("fs1", b).account_id == "acc2"


# -- the listing ---------------------------------------------------------------------------------


def test_whitespace_padding_a_listing_is_not_read_a_byte_at_a_time() -> None:
    """Failed: the whitespace between a listing's rows was skipped by a Python loop, a step per
    byte with no row to pace at: a 64 MB answer of blanks held the hub for about 3.5 s. Counted
    here in Python lines run (not timed): a few per row, not a few per byte."""
    pad = b" \r\n\t" * 25_000
    body = b"{" + pad + b'"rows":[' + pad + b'{"uuid":"a"}' + pad + b"," + pad + b"{}]" + pad + b"}"
    lines = 0

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        nonlocal lines
        if frame.f_code.co_filename != showchannels.__file__:
            return None
        if event == "line":
            lines += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        got = listed_uuids(body)
    finally:
        sys.settrace(previous)
    assert got == {"a"}
    assert lines < 1_000, lines
