"""Memory follows the live set (issue #17): after thousands of calls come and go, nothing keeps
a destroyed channel reachable but the live-event ring, which is bounded by its size."""

import gc
import itertools
import tracemalloc
import uuid as uuidlib

import gevent
from hypothesis import given, settings
from hypothesis import strategies as st

from channelsd.channel import Channel
from channelsd.listing import ListCache
from channelsd.stream import RESUME_GRACE, Broker
from channelsd.table import ChannelTable

LIVE = 50
CHURN = 3000
RING = 200


def reachable_channels() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is Channel)


def create(table: ChannelTable, uuid: str, account: str) -> None:
    table.apply(
        "fs1",
        {
            "Event-Name": "CHANNEL_CREATE",
            "Unique-ID": uuid,
            "variable_uuid": uuid,
            "variable_ecallmgr_Account-ID": account,
            "variable_ecallmgr_Owner-ID": f"owner-{uuid[:4]}",
            "Caller-Channel-Created-Time": "1795847542705117",
        },
    )


def destroy(table: ChannelTable, uuid: str) -> None:
    table.apply(
        "fs1",
        {"Event-Name": "CHANNEL_DESTROY", "Unique-ID": uuid, "Hangup-Cause": "NORMAL_CLEARING"},
    )


def churn(table: ChannelTable, broker: Broker, lists: ListCache) -> set[str]:
    """CHURN calls, LIVE up at any time, each account's list built after every create (a
    portal polling), the broker publishing as it goes."""
    live: list[str] = []
    accounts = itertools.cycle([f"acc{i}" for i in range(40)])
    now = 1795847600.0
    for i in range(CHURN):
        account = next(accounts)
        uuid = str(uuidlib.UUID(int=i + 1))
        create(table, uuid, account)
        live.append(uuid)
        now += 1.0  # a new second: the list cache may not answer from the last build
        lists.json(table, table.account_scope(account), now)
        lists.json(table, table.all_scope(), now)
        if len(live) > LIVE:
            destroy(table, live.pop(0))
        if i % 50 == 0:
            broker.publish()
    broker.publish()
    return set(live)


def test_destroyed_channels_are_unreachable_without_subscribers() -> None:
    table = ChannelTable(tombstone_ttl=3600)
    broker = Broker(table, size=RING, interval=3600)
    before = reachable_channels()
    live = churn(table, broker, ListCache())
    assert len(table) == len(live) == LIVE
    assert reachable_channels() - before == LIVE
    assert table.problems() == []
    assert table.account_count() <= LIVE  # accounts without calls keep no scope


def test_with_a_subscriber_only_the_ring_keeps_destroyed_channels() -> None:
    table = ChannelTable(tombstone_ttl=3600)
    broker = Broker(table, size=RING, interval=3600)
    broker.joined()  # someone listens to every account: messages (and their channels) kept
    before = reachable_channels()
    live = churn(table, broker, ListCache())
    extra = reachable_channels() - before - len(live)
    assert 0 < extra <= RING
    assert len(broker._published) == LIVE  # what was last published, per live channel only
    broker.left()
    broker._left -= RESUME_GRACE  # (its grace to resume has run out)
    broker.publish()  # nobody listens any more: the ring empties
    assert reachable_channels() - before == LIVE
    gevent.sleep(0)


def test_tombstones_are_bounded_in_number_as_well_as_time() -> None:
    table = ChannelTable(tombstone_ttl=3600, tombstones_max=100)
    for i in range(1000):
        uuid = str(uuidlib.UUID(int=i + 1))
        create(table, uuid, "acc1")
        destroy(table, uuid)
    assert table.tombstone_count() == 100
    # The newest are the ones remembered: a late event of the last call cannot revive it.
    create(table, str(uuidlib.UUID(int=1000)), "acc1")
    assert len(table) == 0


def test_the_tombstones_memory_follows_what_they_hold_after_a_burst_expires() -> None:
    """A burst of 20,000 hang-ups, then their TTL passes on a quiet switch: the table's memory
    comes back to what a handful of tombstones take, not the burst's dict (it did not: a dict
    keeps the table it grew to until insertions make it resize)."""
    clock = [0.0]
    table = ChannelTable(tombstone_ttl=60, clock=lambda: clock[0])
    uuids = [str(uuidlib.UUID(int=i + 1)) for i in range(20_000)]
    gc.collect()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        for uuid in uuids:
            destroy(table, uuid)  # never heard of: tombstoned all the same
        burst = tracemalloc.get_traced_memory()[0] - start
        clock[0] = 61.0
        table.expire_tombstones()  # nothing ends any more: the daemon's tick expires them
        for uuid in uuids[:5]:
            destroy(table, uuid)
        gc.collect()
        left = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert table.tombstone_count() == 5
    assert burst > 2_000_000  # what 20,000 took
    assert left < burst / 50, (burst, left)


def test_ended_calls_are_kept_for_their_minutes_and_their_number_only() -> None:
    from channelsd.ended import EndedCalls

    clock = [1795847600.0]
    table = ChannelTable(tombstone_ttl=3600)
    ended = EndedCalls(keep_seconds=60, max_calls=100, clock=lambda: clock[0])
    table.listen(ended.on_change)
    before = reachable_channels()
    for i in range(1000):
        uuid = str(uuidlib.UUID(int=i + 1))
        create(table, uuid, "acc1")
        destroy(table, uuid)  # Hangup-Cause: an ending
        clock[0] += 0.1
    assert len(ended) == 100  # the number bound
    clock[0] += 61
    assert len(ended) == 0  # the age bound
    assert reachable_channels() == before  # an ended call keeps its JSON, not the channel
    table.remove("fs1", "never-hung-up")  # a removal without an ending is not a call that ended
    assert len(ended) == 0


@settings(max_examples=60, deadline=None)
@given(
    publishes=st.lists(st.integers(min_value=0, max_value=3 * RING), min_size=1, max_size=12),
    behind=st.lists(st.integers(min_value=0, max_value=4 * RING), min_size=1, max_size=6),
)
def test_a_feed_holds_at_most_the_ring_and_never_serves_a_hole(
    publishes: list[int], behind: list[int]
) -> None:
    """A feed keeps its subscribers' frames for those a little behind. Publishes that each
    catch many messages (a busy switch, a reconcile) once made 64 batches hold 64 rings' worth
    (the soak's in-process run grew by 160,000 frames). Whatever the batch sizes: the frames a
    feed holds never outnumber the ring, and a subscriber at any position gets either exactly
    the frames after it, or None (start over from a snapshot) — never some of them."""
    from channelsd.stream import subscribe

    table = ChannelTable(tombstone_ttl=3600)
    broker = Broker(table, size=RING, interval=3600)
    stream = subscribe(broker, lambda ch: True, lambda item: True, table.all, None)
    next(stream)  # the snapshot: the feed exists from here
    feed = next(iter(broker.feeds.values()))
    every: list[tuple[int, bytes]] = []  # all frames ever published to the feed, in order
    n = 0
    for size in publishes:
        for _ in range(size):
            n += 1
            create(table, str(uuidlib.UUID(int=n)), "acc1")
        start = broker.seq
        broker.publish()
        if broker.seq > start:
            every += [(m.seq, m.data) for m in broker.since(start) or ()]
        assert feed.held <= RING
        for back in behind:
            position = max(0, broker.seq - back)
            out = feed.after(position)
            if out is None:
                assert position < feed.cut
                continue
            want = [seq for seq, _ in every if seq > position]
            got = [
                int(line.split(b"-")[-1]) for line in out.split(b"\n") if line.startswith(b"id: ")
            ]
            assert got == want
    stream.close()
