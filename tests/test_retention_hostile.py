"""Memory follows the live set (issue #17), attacked: a hostile switch's names and values, calls
that end while a stream's snapshot is rendered, bursts larger than the event ring, and a daemon
left quiet after a busy hour. Each test is the reproduction of one finding of the outside
attack on the claim "nothing grows with calls ever seen"; each failed before its fix."""

import gc
import time
import tracemalloc
import uuid as uuidlib
from collections.abc import Callable, Iterator
from typing import Any

from channelsd.channel import DETAIL_CHAINS, MAX_VALUE_CHARS, NUMERIC_DETAILS, PERSONAL_DETAILS
from channelsd.config import parse
from channelsd.daemon import Daemon
from channelsd.stream import Broker, _snapshot, subscribe
from channelsd.table import MAX_RECORDINGS, ChannelTable

from conftest import config_dict

PREFIX = "variable_ecallmgr_"


def uuid_of(n: int) -> str:
    return str(uuidlib.UUID(int=n))


def create(table: ChannelTable, uuid: str, **headers: Any) -> None:
    event = {
        "Event-Name": "CHANNEL_CREATE",
        "Unique-ID": uuid,
        "variable_uuid": uuid,
        PREFIX + "Account-ID": "acc1",
    }
    event.update(headers)
    table.apply("fs1", event)


def destroy(table: ChannelTable, uuid: str) -> None:
    table.apply(
        "fs1",
        {"Event-Name": "CHANNEL_DESTROY", "Unique-ID": uuid, "Hangup-Cause": "NORMAL_CLEARING"},
    )


def calls_through(table: ChannelTable, call: Callable[[str, int], None]) -> Callable[[int], None]:
    """A run of calls (at least 50), each a new uuid: `call` sets it up and checks it, then it
    is destroyed."""
    n = [0]

    def run(calls: int) -> None:
        for _ in range(max(calls, 50)):
            n[0] += 1
            uuid = uuid_of(n[0])
            call(uuid, n[0])
            destroy(table, uuid)

    return run


def retained(run: Callable[[int], None], calls: int) -> int:
    """Bytes still allocated after `calls` calls came and went (none left live), measured
    after a first run of the same kind, so that one-off growth (a dict's table) is not counted."""
    run(0)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run(calls)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_custom_variable_names_of_any_length_are_not_kept_after_their_calls() -> None:
    """Reproduction: the table remembered the first 4096 custom variable names it met (header
    and name, interned), whatever their length: 300 calls whose events each named a new 20 KB
    variable left 12 MB behind with no call up, and 4096 such names of up to an event's size
    (1 MiB) could hold gigabytes for the daemon's life. A name is still the channel's while it
    lives; one longer than a value may be is refused and counted, as such a value is."""
    table = ChannelTable(tombstone_ttl=0.0)

    def call(uuid: str, n: int) -> None:
        name = f"{n:08d}" + "n" * (MAX_VALUE_CHARS - 8)  # as long as a value may be
        create(table, uuid, **{PREFIX + name: "kept"})
        ch = table.get(uuid)
        assert ch is not None and ch.ccvs is not None and ch.ccvs[name] == "kept"

    held = retained(calls_through(table, call), 400)
    assert len(table) == 0
    # Before the fix: ~1.7 MB (400 names of 2 KB, each kept twice), and as much again for
    # every further 400 calls up to 4096 names.
    assert held < 256 * 1024, f"{held} bytes kept after 400 calls, none up"

    refused = table.refused.get("custom_channel_vars", 0)
    huge = "h" * 20_000
    create(table, uuid_of(10**6), **{PREFIX + huge: "refused", PREFIX + "Short": "kept"})
    ch = table.get(uuid_of(10**6))
    assert ch is not None and ch.ccvs == {"Account-ID": "acc1", "Short": "kept"}
    assert table.refused["custom_channel_vars"] == refused + 1


def test_long_media_details_are_not_kept_as_shared_combinations() -> None:
    """Reproduction: details without anything personal (codecs, the application, the caller's
    User-Agent, ...) were kept as shared combinations, up to 1024 of them for the daemon's
    life, whatever their texts: calls with 2 KB values (a caller chooses its User-Agent) left
    ~14 MB behind with no call up. Long texts are their own call's: not kept beyond it."""
    headers = [
        chain[0]
        for key, chain in DETAIL_CHAINS
        if key not in PERSONAL_DETAILS and key not in NUMERIC_DETAILS
    ]
    table = ChannelTable(tombstone_ttl=0.0)

    def call(uuid: str, n: int) -> None:
        values = {h: f"{n:08d}{h}".ljust(MAX_VALUE_CHARS, "v") for h in headers}
        create(table, uuid, **values)
        ch = table.get(uuid)
        assert ch is not None and ch.details is not None
        assert ch.details["user_agent"] == values["variable_sip_user_agent"]  # still shown

    held = retained(calls_through(table, call), 1500)
    assert len(table) == 0
    assert held < 1024 * 1024, f"{held} bytes kept after 1500 calls, none up"


def test_short_details_are_still_shared() -> None:
    """The fix above keeps what the sharing is for: the same codecs and application on many
    channels are one dict."""
    table = ChannelTable()
    for i in range(1, 4):
        media = {"Channel-Read-Codec-Name": "PCMU", "variable_sip_user_agent": "Yealink"}
        create(table, uuid_of(i), **media)
    details = [table.get(uuid_of(i)).details for i in range(1, 4)]  # type: ignore[union-attr]
    assert details[0] == {"read_codec": "PCMU", "user_agent": "Yealink"}
    assert details[0] is details[1] is details[2]


def _live_subscriber(broker: Broker, table: ChannelTable) -> Iterator[bytes]:
    stream = subscribe(broker, lambda ch: True, lambda item: True, table.all, None)
    next(stream)  # its snapshot: it listens from here
    return stream


def test_calls_that_end_while_a_snapshot_is_rendered_leave_nothing_published() -> None:
    """Reproduction: a stream's snapshot is rendered in slices, the hub visited between them;
    a call that ended meanwhile, its destroy published already, was then recorded as
    published by the snapshot, and nothing ever took it out while anyone listened (a
    wallboard that never disconnects): 500 calls, 500 items kept, none up."""
    table = ChannelTable(tombstone_ttl=3600)
    broker = Broker(table, size=1000, interval=3600)
    stream = _live_subscriber(broker, table)
    for batch in range(50):
        uuids = [uuid_of(batch * 100 + i + 1) for i in range(10)]
        for uuid in uuids:
            create(table, uuid)
        broker.publish()

        def snapshot(uuids: list[str] = uuids) -> list[Any]:
            channels = table.all()  # taken; then, between two slices of the rendering:
            for uuid in uuids:
                destroy(table, uuid)
            broker.publish()  # the timer publishes their destroys
            return channels

        _snapshot(broker, lambda ch: True, lambda item: True, snapshot)
    assert len(table) == 0
    assert len(broker._published) == 0
    stream.close()


def test_a_feed_forgets_the_channels_whose_destroys_the_ring_lost() -> None:
    """Reproduction: a publish of more messages than the event ring holds sends a feed's
    subscribers back to a snapshot, but the feed's set of channels they hold kept every
    channel whose destroy was in the lost part, for as long as the feed lived: a node purged
    or a burst larger than api.event_buffer, each time, added its calls for good (1,500
    channels held with none up)."""
    table = ChannelTable(tombstone_ttl=3600)
    broker = Broker(table, size=20, interval=3600)
    stream = _live_subscriber(broker, table)
    feed = next(iter(broker.feeds.values()))
    n = 0
    for _ in range(100):
        uuids = []
        for _ in range(15):
            n += 1
            uuids.append(uuid_of(n))
            create(table, uuids[-1])
        broker.publish()  # within the ring: the feed holds them
        for uuid in uuids:
            destroy(table, uuid)
        for _ in range(10):  # ... and a burst past the ring in the same publish
            n += 1
            create(table, uuid_of(n))
            destroy(table, uuid_of(n))
        broker.publish()
        live = {ch.key for ch in table.all()}
        assert feed.visible <= live
    assert len(table) == 0 and not feed.visible
    # The subscriber is told to start over, and its new snapshot is the truth (empty).
    out = feed.after(0)
    assert out is None
    stream.close()


def test_a_quiet_daemon_lets_go_of_what_its_last_busy_hour_left() -> None:
    """Reproduction: tombstones were pruned only by the next destroy, the list cache's answers
    of the last second only by the next list request, and the event ring only by the next
    change once nobody listened: after the day's last call, a quiet daemon kept them all
    (20,000 tombstones at ~330 B each, the system list's MBs, 10,000 messages with their
    channels: 14 MB in a run of 6,000 calls), and /metrics counted tombstones long expired.
    The daemon's tick lets go of them."""

    class Switch:
        port = 1  # never connected: the daemon is not started

    daemon = Daemon(parse(config_dict([Switch()], sync={"tombstone_ttl": 0.2}), "test.toml"))
    table, broker, lists = daemon.table, daemon.ctx.broker, daemon.ctx.lists
    assert broker is not None
    stream = _live_subscriber(broker, table)
    for i in range(1, 301):
        create(table, uuid_of(i))
    broker.publish()
    lists.json(table, table.all_scope(), time.time())
    for i in range(1, 301):
        destroy(table, uuid_of(i))
    broker.publish()
    stream.close()  # the last subscriber leaves
    assert table.tombstone_count() == 300 and broker.ring and lists._memos
    broker._left -= 3600  # its resume grace is long over
    time.sleep(1.2)  # the tombstones' TTL and the list's second pass, with no event, no request
    assert table.tombstone_count() == 0  # what /metrics exports: no expired tombstones counted
    daemon._tick()
    assert len(table._tombstones) == 0
    assert not lists._memos
    assert not broker.ring and not broker._published


def test_an_idle_broker_takes_a_gap_once_and_listens_again_when_someone_subscribes() -> None:
    """While nobody listens a change costs the broker nothing (the ingest path: ~half a
    microsecond an event otherwise): the first change of the idle time is taken as a gap,
    and the broker leaves the table's listeners until someone subscribes. A subscriber ends
    that: changes are published again, and after it leaves, during its resume grace, they
    still are; once the grace is over, the next change is a new gap (a client resuming from
    before it gets a snapshot)."""
    table = ChannelTable(tombstone_ttl=3600)
    broker = Broker(table, size=1000, interval=3600)

    def listened() -> bool:
        return broker._on_change in table._on_change and broker._on_change in table._on_destroy

    assert listened()
    create(table, uuid_of(1))
    seq = broker.seq
    assert broker._gap and not broker.ring
    assert not listened() and broker._on_change not in table._on_destroy
    create(table, uuid_of(2))
    destroy(table, uuid_of(1))
    assert broker.seq == seq and not broker._pending  # no second gap, nothing kept
    stream = _live_subscriber(broker, table)
    assert listened() and table._on_change.count(broker._on_change) == 1
    create(table, uuid_of(3))
    broker.publish()
    assert [m.key[1] for m in broker.ring] == [uuid_of(3)]
    stream.close()  # it leaves: its grace begins
    create(table, uuid_of(4))
    broker.publish()
    assert [m.key[1] for m in broker.ring] == [uuid_of(3), uuid_of(4)]
    assert broker.since(seq + 1) is not None  # a resume from within the grace works
    broker._left -= 3600  # the grace is over
    before = broker.seq
    assert listened()
    create(table, uuid_of(5))
    assert broker._gap and broker.seq == before + 1 and not broker.ring
    assert not listened()
    create(table, uuid_of(6))
    assert broker.seq == before + 1
    stream = _live_subscriber(broker, table)  # and once more: listened to, once
    assert listened() and table._on_change.count(broker._on_change) == 1
    create(table, uuid_of(7))
    broker.publish()
    assert [m.key[1] for m in broker.ring] == [uuid_of(7)]
    stream.close()


def test_a_publish_that_spans_the_end_of_the_grace_leaves_nothing_to_diff_against(
    monkeypatch: Any,
) -> None:
    """Reproduction: a publish renders in slices, visiting the hub between them. When the
    resume grace ended meanwhile and a change came, that change took the broker quiet (the
    ring and the published items forgotten, a gap), and the rest of the publish then put its
    items back; quiet, no later change forgot them again (as every idle change did before).
    A channel changed while quiet; a new subscriber's snapshot had the new value; the change
    back to the old one was diffed against the stale item, found no change, and was never
    told: the subscriber showed a value the call no longer had."""
    import gevent

    from channelsd import listing

    monkeypatch.setattr(listing, "YIELD_EVERY", 2)
    table = ChannelTable(tombstone_ttl=3600)
    broker = Broker(table, size=1000, interval=3600)
    stream = _live_subscriber(broker, table)
    x = uuid_of(3)
    create(table, uuid_of(1))
    create(table, uuid_of(2))
    create(table, x, **{"Caller-Caller-ID-Name": "Alice"})
    stream.close()  # it leaves: its grace begins, the three still pending

    def grace_ends_and_a_change_comes() -> None:  # between two slices of the publish
        broker._left -= 3600
        create(table, uuid_of(9))

    gevent.spawn(grace_ends_and_a_change_comes)
    broker.publish()
    assert broker._quiet
    assert not broker.ring and not broker._published  # nothing kept while nobody listens

    create(table, x, **{"Caller-Caller-ID-Name": "Bob"})  # quiet: not looked at
    stream = _live_subscriber(broker, table)  # its snapshot says Bob
    seq = broker.seq
    create(table, x, **{"Caller-Caller-ID-Name": "Alice"})
    broker.publish()
    told = [m for m in broker.ring if m.seq > seq and m.key[1] == x]
    assert told and b"Alice" in told[-1].data
    stream.close()


def test_a_switch_that_starts_recordings_and_never_stops_them_grows_no_row() -> None:
    """RECORD_START with a new path each time and never a RECORD_STOP: a row keeps at most
    MAX_RECORDINGS (before, every one, each change copying the whole tuple: a thousand 1 KB
    paths were a megabyte on one row, and a million copies). The rest are refused and
    counted; a stop still ends one, and then a start is taken again."""
    table = ChannelTable()
    uid = uuid_of(1)
    create(table, uid)

    def record(event: str, n: int) -> None:
        path = f"/var/lib/freeswitch/recordings/{n}-" + "x" * 1000 + ".wav"
        table.apply("fs1", {"Event-Name": event, "Unique-ID": uid, "Record-File-Path": path})

    for n in range(1000):
        record("RECORD_START", n)
    ch = table.get(uid)
    assert ch is not None and len(ch.recordings) == MAX_RECORDINGS
    assert table.refused["recording"] == 1000 - MAX_RECORDINGS
    record("RECORD_STOP", 0)
    assert len(ch.recordings) == MAX_RECORDINGS - 1
    record("RECORD_START", 5000)
    assert len(ch.recordings) == MAX_RECORDINGS and ch.recordings[-1].startswith(
        "/var/lib/freeswitch/recordings/5000-"
    )
