"""The events connection's cutter, attacked: what the reader delivers must not depend on it.

The cutter (Picker.cut) takes up to YIELD_EVERY json event frames in one call and the reader
applies them in one loop (ESLConnection._events). Whatever happens while that loop runs
(a handler closes the connection, or lets the hub run while something else does; the table's
identity changes meanwhile) must give what the reader delivers without the cutter, one frame
at a time. Over real loopback sockets, each case run with and without the cutter.
"""

from __future__ import annotations

from typing import Any

import gevent
import orjson
import pytest
from test_esl_cut import Reader
from test_esl_limits import HANG, Peer

from channelsd import eventpick
from channelsd.esl import ESLConnection
from channelsd.eventpick import TableReader
from channelsd.table import ChannelTable, Identity

from conftest import wait_until


def frame(event: dict[str, Any]) -> bytes:
    body = orjson.dumps(event)
    return b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body


def state(uuid: str, **more: str) -> dict[str, Any]:
    return {"Event-Name": "CHANNEL_STATE", "Unique-ID": uuid, **more}


@pytest.fixture(params=["framed in Python", "cut in C"])
def cutting(request: pytest.FixtureRequest) -> bool:
    if request.param == "cut in C" and not eventpick.built():
        pytest.fail("channelsd_picker is not built: `pip install -e .` builds it")
    return bool(request.param == "cut in C")


@pytest.mark.parametrize("how", ["by the handler", "by another greenlet meanwhile"])
def test_no_event_is_delivered_once_the_connection_is_closed(cutting: bool, how: str) -> None:
    """A connection closed while events are applied (its node torn down: the table marks the
    node's rows stale) delivers nothing more: the reader stops at once, as it does between
    frames, instead of applying the rest of what one socket read held."""
    peer = Peer()
    seen: list[str] = []
    box: dict[str, Reader] = {}

    def handler(event: dict[str, Any], body: bytes) -> None:
        seen.append(event["Unique-ID"])
        if event["Unique-ID"] == "u2":
            if how == "by the handler":
                box["r"].conn.close("torn down")
            else:
                gevent.spawn(box["r"].conn.close, "torn down")
                gevent.sleep(0)  # the handler lets the hub run (logging, a metric, ...)

    try:
        box["r"] = r = Reader(peer, cutting, handler)
        peer.send(b"".join(frame(state(f"u{i}")) for i in range(10)))
        wait_until(r.conn.closed.is_set, HANG, "the close")
        gevent.sleep(0.1)
        assert seen == ["u0", "u1", "u2"]
    finally:
        if "r" in box:
            box["r"].conn.close()
        peer.close()


def test_a_parse_error_after_the_close_is_not_counted(cutting: bool) -> None:
    peer = Peer()
    seen: list[str] = []
    errors: list[Exception] = []
    box: dict[str, Reader] = {}

    def handler(event: dict[str, Any], body: bytes) -> None:
        seen.append(event["Unique-ID"])
        box["r"].conn.close("torn down")

    try:
        box["r"] = r = Reader(peer, cutting, handler)
        r.conn._on_parse_error = errors.append
        bad = b"Content-Length: 5\nContent-Type: text/event-json\n\n{nope"
        peer.send(frame(state("u0")) + bad + frame(state("u1")))
        wait_until(r.conn.closed.is_set, HANG, "the close")
        gevent.sleep(0.1)
        assert (seen, errors, r.conn.parse_errors) == (["u0"], [], 0)
    finally:
        if "r" in box:
            box["r"].conn.close()
        peer.close()


def test_an_event_after_an_identity_change_is_read_for_the_new_identity(cutting: bool) -> None:
    """A SIGHUP (set_identity) lands while a handler lets the hub run: the events after it are
    read for the new identity (its headers picked), as one frame at a time reads them, never
    with what was picked for the old one before the change."""
    table = ChannelTable()
    wider = Identity(ccv_prefix="variable_x_")
    assert "variable_x_owner" not in table.headers_read
    peer = Peer()
    seen: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], body: bytes) -> None:
        seen.append(event)
        if event["Unique-ID"] == "u0":
            gevent.spawn(table.set_identity, wider)
            gevent.sleep(0)  # the handler lets the hub run: the SIGHUP is handled

    try:
        r = Reader(peer, cutting, handler, table)
        extra = {"variable_x_owner": "alice"}
        peer.send(b"".join(frame(state(f"u{i}", **extra)) for i in range(3)))
        wait_until(lambda: len(seen) == 3, HANG, "every event")
        assert table.identity is wider
        assert [e.get("variable_x_owner") for e in seen] == [None, "alice", "alice"]
        r.conn.close()
    finally:
        peer.close()


def test_a_cuts_picks_stop_holding_at_a_new_identity_whatever_was_parsed_since() -> None:
    table = ChannelTable()
    reader = TableReader(table)
    buf = frame(state("u0")) * 2
    cut = reader.cut(buf, 0, 100, 14, 1 << 20)
    assert cut is not None
    picks, bodies, _hints, end, holds = cut
    assert len(bodies) == 2 and end == len(buf) and holds()
    table.set_identity(Identity(ccv_prefix="variable_x_"))
    assert not holds()
    reader.parse(bodies[0])  # the reader follows the new identity: these picks do not
    assert not holds()
    assert reader.cut(buf, 0, 100, 14, 1 << 20)[4]()


@pytest.mark.parametrize("meanwhile", ["a new identity", "a command awaits its answer"])
def test_a_cuts_picks_go_to_on_picked_even_when_picked_anew(meanwhile: str) -> None:
    """The node gives a cut's picks to the table straight (on_picked) and counts them once,
    per cut; whole-parsed events go through its handler (on_event), which counts them there.
    A pick read anew after the hub ran (a SIGHUP's new identity, or a command of this process
    waiting for its answer) is still one of the cut's: to on_picked, or it is counted twice."""
    table = ChannelTable()
    peer = Peer()
    picked: list[str] = []
    whole: list[str] = []
    waiting = {"n": 0}

    def on_picked(event: dict[str, Any], body: bytes) -> None:
        picked.append(event["Unique-ID"])
        if event["Unique-ID"] == "u0":
            if meanwhile == "a new identity":
                gevent.spawn(table.set_identity, Identity(ccv_prefix="variable_x_"))
                gevent.sleep(0)
            else:
                ESLConnection.awaiting += 1  # as another connection's command in flight
                waiting["n"] = 1

    def on_event(event: dict[str, Any], body: bytes) -> None:
        whole.append(event["Event-Name"])
        if waiting["n"]:
            ESLConnection.awaiting -= 1
            waiting["n"] = 0

    try:
        conn = Reader(peer, True, on_event, table, on_picked=on_picked).conn
        events = [state("u0"), state("u1"), state("u2"), {"Event-Name": "CUSTOM"}, state("u3")]
        peer.send(b"".join(frame(e) for e in events))
        wait_until(lambda: len(picked) + len(whole) == 5, HANG, "every event")
        assert picked == ["u0", "u1", "u2", "u3"]
        assert whole == ["CUSTOM"]
        conn.close()
    finally:
        if waiting["n"]:
            ESLConnection.awaiting -= 1
        peer.close()


@pytest.mark.parametrize("how", ["by the table", "by another greenlet meanwhile"])
def test_events_never_delivered_after_a_close_mid_cut_are_not_counted(
    cutting: bool, how: str
) -> None:
    """channelsd_esl_events_total counts events ingested. A connection closed while a cut's
    events are applied (its node torn down) delivers none of the rest of the cut; they must
    not be counted either, as one frame at a time never counted them. Counted per cut, when
    the cut was taken, they were: the counter ran ahead of what the table ever heard."""
    from channelsd.config import NodeConfig, SyncConfig
    from channelsd.node import NodeLink

    peer = Peer()
    table = ChannelTable()
    node = NodeLink(NodeConfig("fs1", "127.0.0.1", peer.port, "ClueCon"), table, SyncConfig())
    if not cutting:
        node._reader.cut = lambda *args: None  # type: ignore[method-assign]
    applied: list[str] = []
    apply = table.apply
    box: dict[str, ESLConnection] = {}

    def applying(name: str, event: dict[str, Any], raw: Any = None) -> None:
        applied.append(event["Unique-ID"])
        apply(name, event, raw)
        if event["Unique-ID"] == "u2":
            if how == "by the table":
                box["conn"].close("torn down")
            else:
                gevent.spawn(box["conn"].close, "torn down")
                gevent.sleep(0)  # a listener lets the hub run

    table.apply = applying  # type: ignore[method-assign]
    try:
        box["conn"] = conn = node._connection("events", node._on_event)
        peer.ready.wait(HANG)
        peer.send(b"".join(frame(state(f"u{i}")) for i in range(10)))
        wait_until(conn.closed.is_set, HANG, "the close")
        gevent.sleep(0.1)
        assert applied == ["u0", "u1", "u2"]
        assert node._event_counts == {"CHANNEL_STATE": 3}
    finally:
        if "conn" in box:
            box["conn"].close()
        peer.close()
