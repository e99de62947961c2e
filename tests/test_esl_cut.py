"""The events connection's cutter (Picker.cut, C): json event frames in a row taken in one call.

The reader hands it each socket read; it takes the frames FreeSWITCH writes for json events
("Content-Length: N", "Content-Type: text/event-json", the body), picks each body, and stops
at anything else, which the reader's own framing takes as before. So what the reader delivers
must not depend on it: the same events, bodies, parse errors and closes, however the bytes are
chunked, whatever else is mixed in. Held here over real loopback sockets against a reader
without the cutter, and the C call alone against hostile arguments and bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gevent
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_esl_limits import HANG, Peer
from test_eventpick import ALL_EVENTS, JSON_BODIES, _state
from test_logs import journal, text_message

from channelsd import esl, eventpick
from channelsd.esl import ESLConnection
from channelsd.eventpick import TableReader
from channelsd.events import parse_json
from channelsd.table import TABLE_EVENT_NAMES, TABLE_EVENT_PREFIX, ChannelTable, Identity

from conftest import count_pauses, wait_until

Picker = eventpick.Picker
KINDS = (TABLE_EVENT_PREFIX, TABLE_EVENT_NAMES)
LIMIT = esl.MAX_EVENT_BYTES


def test_the_cutter_is_built_here() -> None:
    assert eventpick.built(), "channelsd_picker was not built: `pip install -e .` again"


def picker() -> Any:
    return eventpick.picker_for(ChannelTable())


def cut(buf: bytes, pos: int = 0, budget: int = 100, max_body: int = LIMIT) -> Any:
    """The picks, bodies and position of a cut, its hints checked on the way."""
    picks, bodies, hints, end = picker().cut(
        buf, pos, budget, esl.BIG_EVENT_SHIFT, max_body, *KINDS
    )
    for picked, body, hint in zip(picks, bodies, hints, strict=True):
        # b"" exactly for a pick without a header of the prefix, None for one with; a None
        # pick's is its body
        assert hint == (body if picked is None else None if prefixed(picked) else b"")
    return picks, bodies, end


def prefixed(event: dict[str, Any], table: ChannelTable | None = None) -> bool:
    """Whether a header of this event has the custom channel variables' prefix."""
    prefix = (table or ChannelTable()).identity.ccv_prefix
    return any(k.startswith(prefix) for k in event)


def frame(body: bytes, head: bytes | None = None) -> bytes:
    head = head if head is not None else b"Content-Length: %d" % len(body)
    return head + b"\nContent-Type: text/event-json\n\n" + body


STATE = orjson.dumps({"Event-Name": "CHANNEL_STATE", "Unique-ID": "u1", "Other": "x"})
BEAT = orjson.dumps({"Event-Name": "HEARTBEAT", "Session-Count": "3"})

# -- the C call alone ------------------------------------------------------------------------


def test_it_takes_json_event_frames_in_a_row_and_picks_the_tables() -> None:
    buf = b"junk" + frame(STATE) + frame(BEAT) + frame(STATE)
    picks, bodies, pos = cut(buf, 4)
    assert bodies == [STATE, BEAT, STATE] and pos == len(buf)
    assert picks == [{"Event-Name": "CHANNEL_STATE", "Unique-ID": "u1"}, None, picks[0]]


@pytest.mark.parametrize(
    "tail",
    [
        frame(STATE)[:-1],  # the body not all here yet
        frame(STATE)[:20],  # nor the header block
        # the other order of the two headers: the reader's to frame
        b"Content-Type: text/event-json\nContent-Length: %d\n\n" % len(STATE) + STATE,
        frame(STATE, b"Content-Length: +%d" % len(STATE)),
        frame(STATE, b"Content-Length: %d " % len(STATE)),
        frame(STATE, b"Content-Length: "),
        frame(STATE, b"Content-Length: 0000000000000%d" % len(STATE)),  # over 12 digits
        frame(STATE, b"content-length: %d" % len(STATE)),
        frame(STATE).replace(b"event-json", b"event-plain"),
        frame(STATE).replace(b"json\n\n", b"json\r\n\r\n"),
        b"Content-Type: log/data\nContent-Length: 3\n\nabc",
        b"\n" + frame(STATE),  # a stray blank line: the reader's to skip
    ],
)
def test_it_stops_at_whatever_is_not_a_whole_json_event_frame(tail: bytes) -> None:
    buf = frame(STATE) + tail
    picks, bodies, pos = cut(buf)
    assert bodies == [STATE] and pos == len(frame(STATE))
    assert cut(buf, pos) == ([], [], pos)


def test_a_leading_zero_is_still_the_length_the_reader_would_read() -> None:
    buf = frame(STATE, b"Content-Length: 00%d" % len(STATE))
    assert cut(buf)[1:] == ([STATE], len(buf))


def test_a_body_over_the_limit_is_left_to_the_reader_to_read_past() -> None:
    buf = frame(STATE) + frame(STATE)
    assert cut(buf, max_body=len(STATE) - 1) == ([], [], 0)
    assert cut(buf, max_body=len(STATE))[2] == len(buf)


def test_the_budget_counts_frames_and_big_bodies_by_their_size() -> None:
    small = frame(STATE) * 10
    assert len(cut(small, budget=3)[1]) == 3
    big = orjson.dumps({"Event-Name": "CHANNEL_DATA", "pad": "z" * (1 << esl.BIG_EVENT_SHIFT)})
    # the big one costs two: a budget of 2 takes it alone, one of 3 takes one more
    assert len(cut(frame(big) + small, budget=2)[1]) == 1
    assert len(cut(frame(big) + small, budget=3)[1]) == 2
    assert cut(small, budget=0) == ([], [], 0)


@pytest.mark.parametrize(
    "event",
    [
        {"Event-Name": "HEARTBEAT"},
        {"Event-Name": "CHANNEL"},  # the prefix is CHANNEL_
        {"Unique-ID": "u1"},
        {"Event-Name": ["CHANNEL_STATE"]},  # not the plain case: orjson's to parse
        {"Event-Name": "CHANNEL_STATE", "n": 1},
        {"Event-Name": "CHANNEL_\u00e9"},
    ],
)
def test_a_pick_is_none_where_the_body_is_to_be_parsed_whole(event: dict[str, Any]) -> None:
    body = orjson.dumps(event)
    assert cut(frame(body)) == ([None], [body], len(frame(body)))


@pytest.mark.parametrize("name", ["API", "CALL_UPDATE", "RECORD_START", "CHANNEL_X"])
def test_the_tables_kinds_are_picked(name: str) -> None:
    body = orjson.dumps({"Event-Name": name})
    assert cut(frame(body))[0] == [{"Event-Name": name}]


@pytest.mark.parametrize(
    "args",
    [
        (),
        (bytearray(frame(STATE)), 0, 1, 14, LIMIT, *KINDS),
        (memoryview(frame(STATE)), 0, 1, 14, LIMIT, *KINDS),
        (frame(STATE), 0.0, 1, 14, LIMIT, *KINDS),
        (frame(STATE), True, 1, 14, LIMIT, *KINDS),
        (frame(STATE), 0, 1, 14, LIMIT, b"CHANNEL_", TABLE_EVENT_NAMES),
        (frame(STATE), 0, 1, 14, LIMIT, TABLE_EVENT_PREFIX, set(TABLE_EVENT_NAMES)),
        (frame(STATE), 0, 1, 14, LIMIT, *KINDS, "extra"),
    ],
)
def test_wrong_arguments_raise_a_type_error(args: tuple[Any, ...]) -> None:
    with pytest.raises(TypeError):
        picker().cut(*args)


@pytest.mark.parametrize(
    "pos, shift, max_body",
    [(-1, 14, LIMIT), (10**6, 14, LIMIT), (0, -1, LIMIT), (0, 63, LIMIT), (0, 14, -1)],
)
def test_arguments_out_of_range_raise_a_value_error(pos: int, shift: int, max_body: int) -> None:
    with pytest.raises(ValueError):
        picker().cut(frame(STATE), pos, 1, shift, max_body, *KINDS)
    with pytest.raises(OverflowError):
        picker().cut(frame(STATE), 2**70, 1, 14, LIMIT, *KINDS)


def test_an_uninitialised_picker_raises() -> None:
    with pytest.raises(TypeError):
        Picker.__new__(Picker).cut(frame(STATE), 0, 1, 14, LIMIT, *KINDS)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([frame(STATE), frame(BEAT), frame(b""), frame(b"{}")]),
            st.binary(max_size=60).map(frame),
            st.binary(max_size=80),
        ),
        max_size=8,
    ).map(b"".join),
    st.integers(0, 200),
    st.integers(0, 12),
    st.integers(0, 100),
)
def test_on_any_bytes_it_returns_frames_laid_end_to_end(
    buf: bytes, pos: int, budget: int, max_body: int
) -> None:
    pos = min(pos, len(buf))
    picks, bodies, end = cut(buf, pos, budget, max_body)
    assert len(picks) == len(bodies) <= max(budget, 0) and pos <= end <= len(buf)
    assert b"".join(frame(b) for b in bodies) == buf[pos:end]
    for picked, body in zip(picks, bodies, strict=True):
        assert len(body) <= max_body
        if picked is not None:
            assert picked == eventpick.TableReader(ChannelTable()).parse(body)


# -- the reader with and without it, over real sockets ---------------------------------------


class Reader:
    """An ESLConnection to a peer, with or without the cutter: feeding `handler`, or (none
    given) keeping what it delivered and the parse errors it counted."""

    def __init__(
        self,
        peer: Peer,
        cutting: bool,
        handler: Any = None,
        table: ChannelTable | None = None,
        **options: Any,
    ) -> None:
        self.delivered: list[tuple[dict[str, Any], bytes]] = []
        self.errors: list[str] = []
        self.reader = TableReader(table if table is not None else ChannelTable())
        self.conn = ESLConnection(
            "127.0.0.1",
            peer.port,
            "ClueCon",
            timeout=HANG,
            on_event=handler or (lambda event, body: self.delivered.append((event, body))),
            on_parse_error=lambda exc: self.errors.append(type(exc).__name__),
            parse_json=self.reader.parse,
            cut=self.reader.cut if cutting else None,
            **options,
        )
        self.conn.connect()
        peer.ready.wait(HANG)


PLAIN = b"Event-Name: CHANNEL_PARK\nUnique-ID: u2\n\n"
UTF8 = orjson.dumps({"Event-Name": "CHANNEL_STATE", "Unique-ID": "u3", "x": "\u00e9"})
CAPTURED = sorted({body for _, body in JSON_BODIES}, key=len)[::7]
# (frame, the event body it delivers or None)
PIECES = st.one_of(
    st.sampled_from(CAPTURED).map(lambda b: (frame(b), b)),
    st.sampled_from([STATE, BEAT, UTF8]).map(lambda b: (frame(b), b)),
    st.just((frame(STATE, b"Content-Length: 00%d" % len(STATE)), STATE)),
    st.just((b"Content-Type: text/event-json\nContent-Length: %d\n\n" % len(STATE) + STATE, STATE)),
    st.just(
        (b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(PLAIN) + PLAIN, PLAIN)
    ),
    st.just((b"Content-Type: log/data\nContent-Length: 5\n\nhello", None)),
    st.just((b"\n", None)),
    st.just((frame(b"{nope"), None)),  # a parse error, counted, the framing kept
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(PIECES, min_size=1, max_size=30), st.lists(st.integers(1, 4000), max_size=12))
def test_the_reader_delivers_the_same_with_and_without_the_cutter(
    pieces: list[tuple[bytes, bytes | None]], cuts: list[int]
) -> None:
    stream = b"".join(f for f, _ in pieces)
    events = sum(1 for _, b in pieces if b is not None)
    peers = [Peer(), Peer()]
    try:
        readers = [Reader(peers[0], cutting=False), Reader(peers[1], cutting=True)]
        for peer in peers:
            at = 0
            for size in cuts:  # chunks of these sizes, each given a chance to be read alone
                peer.send(stream[at : at + size])
                at += size
                gevent.sleep(0)
            peer.send(stream[at:])
        broken = stream.count(frame(b"{nope"))
        for r in readers:
            wait_until(
                lambda r=r: (len(r.delivered), len(r.errors)) == (events, broken),
                HANG,
                "every event and parse error",
            )
            assert r.conn.alive
        assert [e for e, _ in readers[0].delivered] == [e for e, _ in readers[1].delivered]
        assert readers[0].errors == readers[1].errors
        bodies = [b for _, b in pieces if b is not None]
        assert [b for _, b in readers[0].delivered] == bodies
        for (event, hint), body in zip(readers[1].delivered, bodies, strict=True):
            assert hint == body or hint == (None if prefixed(event) else b"")
        assert readers[1].errors == ["EventParseError"] * broken
    finally:
        for r in locals().get("readers", []):
            r.conn.close()
        for peer in peers:
            peer.close()


def test_a_burst_of_table_events_still_visits_the_hub_every_yield_every(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses = count_pauses(monkeypatch, esl)
    peer = Peer()
    try:
        r = Reader(peer, cutting=True)
        count = 5 * esl.YIELD_EVERY
        peer.send(frame(STATE) * count)
        wait_until(lambda: len(r.delivered) == count, HANG, "every event")
        assert len(pauses) >= count // esl.YIELD_EVERY - 1
        r.conn.close()
    finally:
        peer.close()


def test_a_handler_that_fails_loses_only_its_event(monkeypatch: pytest.MonkeyPatch) -> None:
    peer = Peer()
    try:
        seen: list[str] = []

        def handler(event: dict[str, Any], body: bytes) -> None:
            seen.append(event["Unique-ID"])
            if event["Unique-ID"] == "bad":
                raise RuntimeError("a bug in one event's handling")

        conn = Reader(peer, True, handler).conn
        names = ["a", "bad", "b"]
        peer.send(
            b"".join(
                frame(orjson.dumps({"Event-Name": "CHANNEL_STATE", "Unique-ID": n})) for n in names
            )
        )
        wait_until(lambda: len(seen) == 3, HANG, "every event")
        assert seen == names and conn.alive
        conn.close()
    finally:
        peer.close()


def test_a_parse_of_the_whole_body_is_what_the_table_parser_gives() -> None:
    # the reader parses a body the cutter left (a None pick) with events.parse_json: the
    # table's parser gives the same for each such body
    for body in (BEAT, orjson.dumps({"Event-Name": "CHANNEL_STATE", "n": 1})):
        assert cut(frame(body))[0] == [None]
        assert TableReader(ChannelTable()).parse(body) == parse_json(body)


@pytest.mark.parametrize("identity", ["default", "custom"])
def test_a_table_fed_through_the_cutter_equals_one_fed_whole_events(identity: str) -> None:
    """Every capture event and its Kazoo twin, in one stream cut as the reader cuts it: the
    picks and their hints (b"" where no header has the prefix, None where one has: the body
    is not searched for it) make the table the whole events make."""

    def table() -> ChannelTable:
        chains = {"owner_id": ["variable_sip_from_user", "Caller-Caller-ID-Number"]}
        return ChannelTable(Identity(chains) if identity == "custom" else None, clock=lambda: 1.0)

    whole, fed = table(), table()
    reader = TableReader(fed)
    bodies = [orjson.dumps(event) for _, event in ALL_EVENTS]
    stream = b"".join(frame(b) for b in bodies)
    pos = hinted = 0
    batch: Iterator[tuple[Any, bytes, bytes | None]] = iter(())
    for i, body in enumerate(bodies):
        whole.apply("fs1", parse_json(body), body)
        taken = next(batch, None)
        if taken is None:  # a cut of up to 50 frames' worth, as the reader would ask
            cut = reader.cut(stream, pos, 50, esl.BIG_EVENT_SHIFT, LIMIT)
            assert cut is not None
            picks, cut_bodies, hints, pos, _holds = cut
            batch = iter(zip(picks, cut_bodies, hints, strict=True))
            taken = next(batch)
        picked, cut_body, hint = taken
        assert cut_body == body
        fed.apply("fs1", parse_json(body) if picked is None else picked, hint)
        hinted += hint == b""
        if i % 97 == 0:
            assert _state(fed) == _state(whole), i
    assert _state(fed) == _state(whole)
    assert pos == len(stream)
    assert hinted > len(bodies) / 4  # the hint is what is being tested


def test_without_the_picker_the_reader_frames_every_event_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where channelsd_picker was not built there is nothing to cut with: the reader's own
    framing takes every frame, and every event is parsed whole."""
    monkeypatch.setattr(eventpick, "Picker", None)
    assert TableReader(ChannelTable()).cut(frame(STATE), 0, 100, 14, LIMIT) is None
    peer = Peer()
    try:
        r = Reader(peer, cutting=True)
        peer.send(frame(STATE) * 3 + frame(BEAT))
        wait_until(lambda: len(r.delivered) == 4, HANG, "every event")
        assert [e for e, _ in r.delivered] == [parse_json(STATE)] * 3 + [parse_json(BEAT)]
        assert [b for _, b in r.delivered] == [STATE] * 3 + [BEAT]
        r.conn.close()
    finally:
        peer.close()


HOSTILE_UUID = "00000000-0000-0000-0000-000000000001"


def _hostile_bodies(prefix: str) -> list[bytes]:
    """Events a hostile switch could send about one channel, where the prefix's bytes and the
    custom variables' names disagree: a name written with a \\u or \\/ escape (orjson reads the
    prefix, the bytes do not hold it), the prefix in values only, a prefixed name whose value
    is no string, a name that is the prefix alone, the same name twice."""
    u, p = HOSTILE_UUID, prefix.replace("/", "\\/")
    q = prefix.replace("_", "\\u005f", 1)
    head = f'"Unique-ID":"{u}","Caller-Channel-Created-Time":"1700000000000000"'
    return [
        f'{{"Event-Name":"CHANNEL_CREATE",{head},"variable_uuid":"{u}",'
        f'"{prefix}Account-ID":"acc1"}}'.encode(),
        # the prefix only in values: picked with the b"" hint
        f'{{"Event-Name":"CHANNEL_ANSWER",{head},"Channel-State":"{prefix}Account-ID"}}'.encode(),
        f'{{"Event-Name":"CHANNEL_DATA",{head},"variable_uuid":"{u}",'
        f'"Caller-Caller-ID-Number":"{prefix}x","variable_sip_from_user":"{prefix}"}}'.encode(),
        # escaped names: orjson's to read (a \\u), or the picker's to refuse (\\/)
        f'{{"Event-Name":"CHANNEL_DATA",{head},"variable_uuid":"{u}",'
        f'"{q}Account-ID":"acc2"}}'.encode(),
        f'{{"Event-Name":"CHANNEL_DATA",{head},"variable_uuid":"{u}","{p}Owner-ID":"o\\/1"}}'.encode(),
        # not a string; the prefix alone; twice the same name
        f'{{"Event-Name":"CHANNEL_DATA",{head},"variable_uuid":"{u}","{prefix}Owner-ID":1}}'.encode(),
        f'{{"Event-Name":"CHANNEL_DATA",{head},"variable_uuid":"{u}","{prefix}":"acc3",'
        f'"{prefix}Account-ID":"acc3","{prefix}Account-ID":"acc4"}}'.encode(),
        f'{{"Event-Name":"CHANNEL_EXECUTE",{head},"Other":"{prefix}"}}'.encode(),
        f'{{"Event-Name":"API","API-Command":"uuid_setvar",'
        f'"API-Command-Argument":"{u} ecallmgr_Account-ID acc5"}}'.encode(),
        f'{{"Event-Name":"CHANNEL_DATA",{head},"variable_uuid":"{u}",'
        f'"Caller-Caller-ID-Number":"n1","variable_sip_from_user":"{prefix}Owner-ID"}}'.encode(),
    ]


@pytest.mark.parametrize("prefix", ["variable_ecallmgr_", "variable_", "", "variable_x/"])
@pytest.mark.parametrize("identity", ["default", "custom variables"])
def test_a_hostile_switch_cannot_make_the_hint_differ_from_the_body(
    prefix: str, identity: str
) -> None:
    """The table fed the cutter's picks and hints equals the table fed the whole events with
    their bodies, after each event, for spellings where the prefix's bytes and the custom
    variables' names disagree, with an identity whose chains are custom variables too."""

    def table() -> ChannelTable:
        chains = None
        if identity == "custom variables":
            chains = {
                "owner_id": [prefix + "Owner-ID", "Caller-Caller-ID-Number"],
                "account_id": ["variable_sip_from_user", prefix + "Account-ID"],
            }
        return ChannelTable(Identity(chains, ccv_prefix=prefix), clock=lambda: 1.0)

    whole, fed = table(), table()
    reader = TableReader(fed)
    bodies = _hostile_bodies(prefix)
    stream = b"".join(frame(b) for b in bodies)
    cut = reader.cut(stream, 0, 100, esl.BIG_EVENT_SHIFT, LIMIT)
    assert cut is not None
    picks, cut_bodies, hints, pos, _ = cut
    assert cut_bodies == bodies and pos == len(stream)
    assert b"" in hints or not prefix  # the hint is what is being tested
    for body, picked, hint in zip(bodies, picks, hints, strict=True):
        whole.apply("fs1", parse_json(body), body)
        fed.apply("fs1", parse_json(body) if picked is None else picked, hint)
        assert _state(fed) == _state(whole), body


@pytest.mark.parametrize("cutting", [False, True], ids=["framed in Python", "cut in C"])
def test_a_handler_failure_logs_the_switchs_event_name_on_one_line(cutting: bool) -> None:
    """The event's name is the switch's text: a line break in it (JSON's \\n, which the
    picker decodes as orjson does) must not forge a journal line of its own. Read where the
    operator reads it, through the daemon's own formatter (which escapes it)."""
    forged = "CHANNEL_X\nnode=fs9 restarted core_uuid=forged"
    peer = Peer()
    try:
        failed: list[str] = []

        def handler(event: dict[str, Any], body: bytes) -> None:
            failed.append(event["Event-Name"])
            raise RuntimeError("a bug in one event's handling")

        conn = Reader(peer, cutting, handler, label="fs1/events").conn
        with journal("text") as stream:
            peer.send(frame(orjson.dumps({"Event-Name": forged, "Unique-ID": "u1"})))
            wait_until(lambda: failed == [forged], HANG, "the handler failed")
        lines = stream.getvalue().splitlines()
        assert [text_message(line) for line in lines if "core_uuid=forged" in line] == [
            "fs1/events: handler failed on CHANNEL_X\\nnode=fs9 restarted core_uuid=forged"
        ]
        # and its traceback, as the exception it logs
        assert lines[1] == "Traceback (most recent call last):", lines
        assert lines[-1] == "RuntimeError: a bug in one event's handling", lines
        conn.close()
    finally:
        peer.close()
