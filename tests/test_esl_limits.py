"""A hostile or broken switch cannot hold the daemon through its ESL socket (issue #11, item 4).

Every frame is bounded: a header block that never ends resets the connection after
MAX_HEADER_BYTES; an event body over MAX_EVENT_BYTES is read past, dropped and counted, with
the framing (and the connection) kept; a long body visits the hub every YIELD_BYTES while it
arrives, because a gevent recv that always finds data never switches by itself. Driven over
real loopback sockets by a raw ESL peer that speaks as FreeSWITCH does and then misbehaves,
and against the real daemon and the stand-in switch.
"""

from __future__ import annotations

import socket
from typing import Any

import gevent
import gevent.event
import orjson
import pytest
from test_metaflow_limits import RunLengths

from channelsd import esl, eventpick
from channelsd.esl import ESLConnection, FrameTooLarge
from channelsd.eventpick import TableReader
from channelsd.events import parse_json
from channelsd.standin.replay import Frame
from channelsd.table import ChannelTable

from conftest import count_pauses, wait_until

HANG = 30.0  # a bound against hangs, never a speed assertion
MB = 1024 * 1024


class Peer:
    """A raw ESL server on loopback: it authenticates a client as FreeSWITCH does, then
    sends whatever the test writes, as fast as the socket takes it."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.sock: Any = None
        self.ready = gevent.event.Event()
        self.sent = 0
        self._inbox = b""
        self._greenlet = gevent.spawn(self._accept)

    def _accept(self) -> None:
        sock, _ = self.listener.accept()
        sock.sendall(b"Content-Type: auth/request\n\n")
        assert self.command(sock).startswith("auth ")
        sock.sendall(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
        self.sock = sock
        self.ready.set()

    def command(self, sock: Any = None) -> str:
        """The next command the client sent."""
        sock = sock or self.sock
        while b"\n\n" not in self._inbox:
            data = sock.recv(65536)
            assert data, "the client closed"
            self._inbox += data
        text, _, self._inbox = self._inbox.partition(b"\n\n")
        return text.decode()

    def send(self, data: bytes) -> bool:
        """Write `data`; False once the client has closed the connection."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        self.sent += len(data)
        return True

    def close(self) -> None:
        self._greenlet.kill(block=False)
        for s in (self.sock, self.listener):
            if s is not None:
                s.close()


def json_event(event: dict[str, Any]) -> bytes:
    body = orjson.dumps(event)
    return b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body


def plain_event(name: str, pad: int) -> bytes:
    body = f"Event-Name: {name}\nX-Pad: {'p' * pad}\n\n".encode()
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(body) + body


@pytest.fixture
def peer() -> Any:
    p = Peer()
    yield p
    p.close()


class Client:
    """An ESLConnection to the peer, with what it delivered. Every test here runs twice: with
    the reader's own framing only, and with the table's cutter taking json events in a row
    (as the daemon's events connection does): both must hold every limit."""

    cut = False  # set by the `framing` fixture below

    def __init__(self, peer: Peer) -> None:
        self.events: list[dict[str, Any]] = []
        self.errors: list[Exception] = []
        reader = TableReader(ChannelTable()) if self.cut else None
        self.conn = ESLConnection(
            "127.0.0.1",
            peer.port,
            "ClueCon",
            timeout=HANG,
            on_event=lambda event, _body: self.events.append(event),
            on_parse_error=self.errors.append,
            parse_json=reader.parse if reader else parse_json,
            cut=reader.cut if reader else None,
        )
        self.conn.connect()
        peer.ready.wait(HANG)

    def names(self) -> list[str]:
        return [e.get("Event-Name", "?") for e in self.events]


@pytest.fixture(autouse=True, params=["framed in Python", "cut in C"])
def framing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.param == "cut in C" and not eventpick.built():
        pytest.fail("channelsd_picker is not built: `pip install -e .` builds it")
    monkeypatch.setattr(Client, "cut", request.param == "cut in C")


class BytesBetweenVisits:
    """What a client's reader received between two visits to the hub (esl._pause)."""

    def __init__(self, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
        self.client = client
        self.at_visits: list[int] = []  # bytes received when each visit to the hub began
        pause = esl._pause

        def counting() -> None:
            self.at_visits.append(client.conn.rx_total)
            pause()

        monkeypatch.setattr(esl, "_pause", counting)

    def longest(self) -> int:
        marks = [0, *self.at_visits, self.client.conn.rx_total]
        return max(b - a for a, b in zip(marks, marks[1:], strict=False))


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each visit the reader pays to the hub; the list grows by one per visit."""
    return count_pauses(monkeypatch, esl)


# -- header blocks -----------------------------------------------------------------------------


@pytest.mark.parametrize("arrives", ["in 1 MB chunks without end", "whole, then a blank line"])
def test_a_header_block_over_the_limit_resets_the_connection(peer: Peer, arrives: str) -> None:
    client = Client(peer)
    conn = client.conn
    assert peer.send(b"Content-Type: text/event-json\nX-Junk: ")
    if arrives.startswith("whole"):
        # One header line longer than the limit, ended properly: still no ESL frame.
        peer.send(b"A" * (esl.MAX_HEADER_BYTES + 1) + b"\n\n")
    else:
        # Before the fix the reader kept it all (and re-searched it all at every read) for as
        # long as the peer sent: the loop ends only because the daemon closes.
        while peer.send(b"A" * MB):
            assert peer.sent < 256 * MB, "the reader never gave up on the header block"
    wait_until(lambda: conn.closed.is_set(), HANG, "the reader resets the connection")
    assert "header block" in conn.close_reason, conn.close_reason
    assert client.events == []


def test_a_switch_that_never_ends_its_headers_is_reconnected(
    switch: Any, make_daemon: Any, figure: Any
) -> None:
    """The attack of issue #11 against the whole daemon: the node resets, reconnects and
    reconciles; HTTP answers throughout; the reader's longest run without the hub is
    measured for RELIABILITY.md."""
    h = make_daemon([switch])
    node = h.node()
    reconnects = node.reconnects
    head = Frame("text/event-json", "CHANNEL_CREATE", None, b"Content-Type: text/event-json\nX-J: ")
    junk = Frame("text/event-json", "CHANNEL_CREATE", None, b"A" * MB)
    sent = 0
    with RunLengths({gevent.getcurrent()}) as runs:
        switch.send_frames([head])
        while node.reconnects == reconnects:
            assert sent < 256, "the reader never gave up on the header block"
            switch.send_frames([junk])
            sent += 1
            assert h.api.get("/healthz", tok=None).status_code == 200
    h.wait_ready(HANG)
    a, _ = switch.originate("9000", {"account_id": "acc1"})
    wait_until(lambda: h.table.get(a) is not None, HANG, "a new call reaches the table")
    figure("esl header flood", sent_mb=sent, worst_ms=round(runs.worst * 1000, 2))
    # Against hangs only (a stall on a loaded machine is not a failure); the pacing itself is
    # checked structurally by the `pauses` tests above.
    assert runs.worst < HANG


# -- bodies ------------------------------------------------------------------------------------


def test_an_oversized_event_is_read_past_dropped_and_counted(peer: Peer, pauses: list[int]) -> None:
    client = Client(peer)
    big = 8 * MB
    peer.send(json_event({"Event-Name": "HEARTBEAT", "n": 1}))
    # the json events' fast path, and the general path (plain), each past MAX_EVENT_BYTES
    peer.send(json_event({"Event-Name": "CHANNEL_CREATE", "pad": "x" * big}))
    peer.send(plain_event("CHANNEL_DATA", esl.MAX_EVENT_BYTES))
    # the largest event kept, then the next one: the framing held
    near = esl.MAX_EVENT_BYTES - 200
    peer.send(json_event({"Event-Name": "CUSTOM", "pad": "y" * near}))
    peer.send(json_event({"Event-Name": "HEARTBEAT", "n": 2}))
    wait_until(lambda: len(client.events) == 3, HANG, "the events around the big ones")
    assert client.names() == ["HEARTBEAT", "CUSTOM", "HEARTBEAT"]
    assert [type(e) for e in client.errors] == [FrameTooLarge, FrameTooLarge]
    assert client.conn.alive
    # Read past in pieces with the hub visited between them, never one uninterrupted read.
    assert len(pauses) >= big // (esl.YIELD_BYTES + esl.RECV_BYTES)


def test_a_long_reply_visits_the_hub_while_it_arrives(peer: Peer, pauses: list[int]) -> None:
    """A big `show channels as json` answer is kept whole (replies are never skipped), and
    the hub runs while it arrives."""
    client = Client(peer)
    size = 24 * MB
    job = gevent.spawn(client.conn.api, "show channels as json", HANG)
    assert peer.command() == "api show channels as json"
    body = b"[" + b" " * (size - 2) + b"]"
    peer.send(b"Content-Type: api/response\nContent-Length: %d\n\n" % size + body)
    reply = job.get(timeout=HANG)
    assert reply == body.decode()
    assert len(pauses) >= size // (esl.YIELD_BYTES + esl.RECV_BYTES)
    assert client.conn.alive


def test_big_events_under_the_limit_cost_their_size_between_visits(
    peer: Peer, pauses: list[int]
) -> None:
    """YIELD_EVERY frames, but a big event counts as many frames as its size: a burst of
    big events cannot hold the hub for YIELD_EVERY of them."""
    client = Client(peer)
    count = 40
    pad = esl.MAX_EVENT_BYTES - 200
    for i in range(count):
        peer.send(json_event({"Event-Name": "CUSTOM", "n": i, "pad": "z" * pad}))
    wait_until(lambda: len(client.events) == count, HANG, "every big event")
    units = 1 + (pad >> esl.BIG_EVENT_SHIFT)
    assert len(pauses) >= count * units // esl.YIELD_EVERY - 1


def _frame_of(kind: str, i: int, size: int) -> bytes:
    """A frame whose body is exactly `size` bytes: a json or plain event, or a log line."""
    if kind == "json":
        base = len(orjson.dumps({"Event-Name": "CUSTOM", "n": i, "pad": ""}))
        frame = json_event({"Event-Name": "CUSTOM", "n": i, "pad": "p" * (size - base)})
    elif kind == "plain":
        frame = plain_event("CUSTOM", 0)
        frame = plain_event("CUSTOM", size - (len(frame) - frame.index(b"\n\n") - 2))
    else:
        frame = b"Content-Type: log/data\nContent-Length: %d\n\n" % size + b"l" * size
    assert frame.endswith(b"\n\n" + frame[-size:]) and b"Content-Length: %d\n" % size in frame
    return frame


@pytest.mark.parametrize("units", [1, 2], ids=["one frame each", "two frames each"])
@pytest.mark.parametrize("kind", ["json", "plain", "log"])
def test_a_turn_reads_at_most_turn_bytes_whatever_the_frames_size(
    peer: Peer, monkeypatch: pytest.MonkeyPatch, kind: str, units: int
) -> None:
    """The worst case for a turn's length: bodies just under one more frame's worth each.
    Between two visits to the hub the reader still reads no more than TURN_BYTES of them
    (~1.2 MB), events and the frames it drops (log lines) alike: counting every body as one
    frame, 300 of them would be 2.4 MB here, and 4.9 MB with the 16 KiB frames of before."""
    client = Client(peer)
    size = (units << esl.BIG_EVENT_SHIFT) - 1
    count = 4 * esl.YIELD_EVERY
    visits = BytesBetweenVisits(client, monkeypatch)
    frames = [_frame_of(kind, i, size) for i in range(count)]
    peer.send(b"".join(frames) + json_event({"Event-Name": "HEARTBEAT"}))
    wanted = 1 + (count if kind != "log" else 0)
    wait_until(lambda: len(client.events) == wanted, HANG, "every event")
    assert esl.TURN_BYTES <= 1_250_000
    # bytes received between two visits: at most a turn's bodies, their heads, the frame
    # that ended the turn and one read past it
    longest = visits.longest()
    head = len(frames[0]) - size
    assert longest <= esl.TURN_BYTES + (esl.TURN_BYTES // size + 1) * head + esl.RECV_BYTES
    assert client.conn.alive


def _header_only_frame(lines: str) -> bytes:
    """A log line's frame with no body and a header block just under MAX_HEADER_BYTES: one
    long header line, or thousands of short ones (each split and read in Python)."""
    head = b"Content-Type: log/data\n"
    size = esl.MAX_HEADER_BYTES - 2048
    if lines == "one long line":
        block = head + b"X-Pad: " + b"A" * (size - len(head) - 7)
    else:
        block = head + (b"a: \n" * ((size - len(head)) // 4))[:-1]
    assert len(block) < esl.MAX_HEADER_BYTES
    return block + b"\n\n"


@pytest.mark.parametrize("lines", ["one long line", "short lines"])
def test_header_blocks_cost_a_turn_their_size(
    peer: Peer, monkeypatch: pytest.MonkeyPatch, lines: str
) -> None:
    """Frames whose bytes are all in their header block. Counted as one frame each, a turn
    took 300 of them: ~19 MB, and with short lines 0.6-1.2 s of parsing, between visits to
    the hub (an outside attack). A block costs one more frame per 2**HEADER_SHIFT bytes: a
    turn reads at most TURN_BYTES, one block past it and one read ahead."""
    client = Client(peer)
    visits = BytesBetweenVisits(client, monkeypatch)
    frame = _header_only_frame(lines)
    count = 40  # ~2.5 MB: past a turn's bound, far fewer than YIELD_EVERY frames
    assert count * len(frame) > esl.TURN_BYTES + len(frame) + esl.RECV_BYTES
    peer.send(frame * count + json_event({"Event-Name": "HEARTBEAT"}))
    wait_until(lambda: len(client.events) == 1, HANG, "the event after the blocks")
    assert visits.longest() <= esl.TURN_BYTES + len(frame) + esl.RECV_BYTES
    assert client.conn.alive


def test_plain_events_cost_their_lines_and_a_big_one_is_dropped(
    peer: Peer, pauses: list[int]
) -> None:
    """A plain event's body is parsed a line at a time in Python, each value URL-decoded:
    1 MiB of escapes took 0.25 s, ~175 ms between visits to the hub per frame (an outside
    attack). One over MAX_PLAIN_EVENT_BYTES is read past, dropped and counted; under it, each
    256 bytes cost one more frame (HEADER_SHIFT), so a turn holds about one of them."""
    client = Client(peer)
    count = 8
    pad = esl.MAX_PLAIN_EVENT_BYTES - 200
    body = b"Event-Name: CUSTOM\nX-Pad: " + b"%41" * (pad // 3) + b"\n\n"
    assert len(body) <= esl.MAX_PLAIN_EVENT_BYTES
    frame = b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(body) + body
    too_big = plain_event("CUSTOM", 100 * 1024)  # (a json event this size would be kept)
    assert esl.MAX_PLAIN_EVENT_BYTES < 100 * 1024 < esl.MAX_EVENT_BYTES
    peer.send(too_big + frame * count + json_event({"Event-Name": "HEARTBEAT"}))
    wait_until(lambda: len(client.events) == count + 1, HANG, "every event under the limit")
    assert client.conn.parse_errors == 1 and isinstance(client.errors[0], FrameTooLarge)
    assert client.events[0]["X-Pad"] == "A" * (pad // 3)
    units = 1 + (len(body) >> esl.BIG_EVENT_SHIFT) + (len(body) >> esl.HEADER_SHIFT)
    per_turn = -(-esl.YIELD_EVERY // units)  # the frames a turn takes: 2 (16 when uncharged)
    assert len(pauses) >= count // per_turn - 1
    assert client.conn.alive


def test_a_flood_of_unparseable_events_still_visits_the_hub(peer: Peer, pauses: list[int]) -> None:
    """An event that does not parse is dropped and counted, and costs its frame like any
    other: a switch sending nothing but broken events (each a failed parse, a retry and a
    log line) cannot hold the hub for as long as it keeps sending them."""
    client = Client(peer)
    count = 10 * esl.YIELD_EVERY
    broken = b"Content-Length: 1\nContent-Type: text/event-json\n\n{"
    peer.send(broken * count + json_event({"Event-Name": "HEARTBEAT"}))
    wait_until(lambda: len(client.events) == 1, HANG, "the event after the broken ones")
    assert len(client.errors) == client.conn.parse_errors == count
    assert len(pauses) >= count // esl.YIELD_EVERY - 1
    assert client.conn.alive


@pytest.mark.parametrize(
    "length",
    [b"+5", b" 5", b"1_0", "\u0661\u0667".encode(), b"99999999999999999999"],
    ids=["plus", "space", "underscore", "arabic-indic digits", "20 digits"],
)
def test_a_content_length_is_ascii_digits_only(peer: Peer, length: bytes) -> None:
    client = Client(peer)
    peer.send(b"Content-Type: text/event-plain\nContent-Length: " + length + b"\n\n12345678901")
    wait_until(lambda: client.conn.closed.is_set(), HANG, "the reader resets the connection")
    assert "Content-Length" in client.conn.close_reason


def test_a_dropped_frames_content_type_is_shown_cut_short(peer: Peer) -> None:
    """A frame too big to keep is dropped with a warning naming its Content-Type, the peer's
    own text: a header block's worth of it is cut to CTYPE_SHOWN characters, not logged whole."""
    client = Client(peer)
    ctype = "text/" + "x" * (esl.MAX_HEADER_BYTES // 2)
    size = esl.MAX_EVENT_BYTES + 1
    peer.send(b"Content-Type: %s\nContent-Length: %d\n\n" % (ctype.encode(), size) + b"z" * size)
    peer.send(json_event({"Event-Name": "HEARTBEAT"}))
    wait_until(lambda: len(client.events) == 1, HANG, "the event after the dropped frame")
    [error] = client.errors
    assert isinstance(error, FrameTooLarge)
    assert ctype[: esl.CTYPE_SHOWN] in str(error)
    assert len(str(error)) < esl.CTYPE_SHOWN + 60
    assert client.conn.alive
