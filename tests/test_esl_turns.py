"""An event reader's turns on the hub (channelsd.esl with channelsd.turns), over a real
socket: a turn is YIELD_EVERY frames however many socket reads they take, and a new turn,
behind the bulk work in line, starts only where the reader waited for its socket.

Until 2026-12-06 every read started a new turn: with other readers in line, a reader gave
way after each read, so twenty nodes' readers each went through the line and the hub once a
read, in turns a read long (about a third of YIELD_EVERY of Kazoo's events), where a single
node's reader took YIELD_EVERY frames a turn (BENCHMARKS.md, issue #16).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
from collections.abc import Iterator
from typing import Any

import gevent
import pytest
from test_esl_limits import Peer, json_event

from channelsd import esl, turns
from channelsd.esl import ESLConnection

from conftest import TurnClock, bulk_crowd, count_pauses, wait_until

HANG = 30.0  # a bound against hangs, never a speed assertion
# Each event's work as the turns' clock sees it: a turn of YIELD_EVERY of them (6 ms) spends
# an iteration's whole budget, so that readers wait in line for their turns.
EVENT_COST = 20e-6
READER = -1  # (the crowd's greenlets log their indices, 0 up)


def _backlog(peer: Peer, frames: list[bytes]) -> None:
    """Queue every frame in the peer's socket at once, without letting the reader run: the
    reader then finds a read's worth waiting at every read."""
    payload = b"".join(frames)
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    peer.sock.settimeout(0.0)  # (a gevent socket: a send that would wait fails instead)
    sent = peer.sock.send(payload)
    assert sent == len(payload), f"the socket's buffers took {sent} of {len(payload)} bytes"


def _close(conn: ESLConnection, peer: Peer) -> None:
    """Close both ends and wait for the reader to end: a reader waiting in line for a turn
    when its connection closes leaves the line only when the hub lets it go (then it finds
    the connection closed); a test that ended before would leave it there for the next."""
    conn.close()
    peer.close()
    reader = conn._receive_events_greenlet
    if reader is not None:
        reader.join(HANG)
        assert reader.dead, "the reader did not end"


@contextlib.contextmanager
def counted_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[ESLConnection, Peer, list[int], list[int]]]:
    """A connected reader on a real socket, with the turns it begins (`turns.begin` calls)
    and the events it handled counted: (conn, peer, begun, done)."""
    begun = count_pauses(monkeypatch, turns, "begin")
    done: list[int] = []
    peer = Peer()
    conn = ESLConnection(
        "127.0.0.1", peer.port, "ClueCon", timeout=HANG, on_event=lambda *_: done.append(1)
    )
    try:
        conn.connect()
        assert peer.ready.wait(HANG)
        yield conn, peer, begun, done
    finally:
        _close(conn, peer)


def test_a_reader_with_a_backlog_takes_turns_of_yield_every_frames_not_of_one_read(
    turn_clock: TurnClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader whose socket holds eight turns' worth of events, read 4 KiB at a time (~45
    events a read), beside nineteen greenlets of bulk work that keep the line full (twenty
    nodes' readers): its events are handled in runs of YIELD_EVERY. Fails when each read
    starts a turn: the reader then gives way after every read (runs of 38-91 events)."""
    monkeypatch.setattr(esl, "RECV_BYTES", 4096)
    order: list[int] = []  # READER for each of the reader's events, the others' turns

    def handled(_event: dict[str, Any], _body: bytes) -> None:
        turn_clock.now += EVENT_COST
        order.append(READER)

    peer = Peer()
    conn = ESLConnection("127.0.0.1", peer.port, "ClueCon", timeout=HANG, on_event=handled)
    crowd: list[Any] = []
    try:
        conn.connect()
        assert peer.ready.wait(HANG)
        each = 8 * esl.YIELD_EVERY
        crowd = bulk_crowd(turn_clock, 19, each, order)  # (each turn appends its index)
        _backlog(
            peer, [json_event({"Event-Name": "HEARTBEAT", "X-Seq": str(k)}) for k in range(each)]
        )
        wait_until(lambda: order.count(READER) == each, HANG, "every event")
        runs = [len(list(run)) for mark, run in itertools.groupby(order) if mark == READER]
        # The first run may be two turns (the reader is first in line before the crowd has
        # joined it); the last is what was left.
        assert len(runs[1:-1]) >= 5, runs
        assert all(r == esl.YIELD_EVERY for r in runs[1:-1]), runs
    finally:
        gevent.killall(crowd)
        _close(conn, peer)


def test_a_new_turn_begins_only_after_a_read_that_waited(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each event that arrives alone is read after a wait for the socket: a turn begins for
    each. A backlog of ~40 reads' worth, read without waiting, begins one turn (two at most,
    should the first read find only part of it)."""
    monkeypatch.setattr(esl, "RECV_BYTES", 4096)
    with counted_reader(monkeypatch) as (_conn, peer, begun, done):
        before = len(begun)
        for n in (1, 2, 3):
            peer.send(json_event({"Event-Name": "HEARTBEAT", "X-Seq": str(n)}))
            wait_until(lambda n=n: len(done) == n, HANG, f"event {n}")
        assert len(begun) - before == 3
        before = len(begun)
        many = 6 * esl.YIELD_EVERY
        _backlog(
            peer, [json_event({"Event-Name": "HEARTBEAT", "X-Seq": str(k)}) for k in range(many)]
        )
        wait_until(lambda: len(done) == 3 + many, HANG, "the backlog")
        assert len(begun) - before <= 2, len(begun) - before


@pytest.mark.parametrize("where", ["inside a body", "inside a skipped body"])
def test_a_read_that_waited_inside_a_body_begins_a_turn(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The rest of a body that arrives after a wait is read, like the frame's head, after a
    poll where every socket had its turn: it begins a turn too, whichever loop reads it
    (until 2026-12-06 only the read between frames did)."""
    with counted_reader(monkeypatch) as (conn, peer, begun, done):
        pad = esl.MAX_EVENT_BYTES + 1 if where == "inside a skipped body" else 1000
        frame = json_event({"Event-Name": "HEARTBEAT", "X-Pad": "x" * pad})
        half = len(frame) - 100  # the head and most of the body, then the rest after a wait
        # The reader back at its socket (it marks what it handled as it reads): the first
        # part finds it waiting, and arrives whole in the socket before it runs.
        wait_until(lambda: conn.handled == conn.rx_total, HANG, "the reader at its socket")
        before, received = len(begun), conn.rx_total
        _backlog(peer, [frame[:half]])
        wait_until(lambda: conn.rx_total == received + half, HANG, "the first part read")
        assert len(begun) - before == 1
        # Back at its socket inside the body, waiting again (the hub polls before it wakes)
        wait_until(lambda: conn.handled == conn.rx_total, HANG, "the reader inside the body")
        peer.send(frame[half:] + json_event({"Event-Name": "HEARTBEAT"}))
        wanted = 1 if where == "inside a skipped body" else 2
        wait_until(lambda: len(done) == wanted, HANG, "the events")
        assert len(begun) - before == 2
