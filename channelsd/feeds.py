"""A feed: what one kind of event-stream subscriber is sent, decided once for all of them.

Subscribers who see the same (scope, owner narrowing, filters) share a feed: each publish, it
decides which messages they may see, frames them once (`_Batch`) and keeps the last batches
for those still writing an earlier one. A subscriber that has caught up is parked (`Parked`)
and the feed hands each batch for all of them to the hub's courier (`Feed.push`, through each
connection's channelsd.httpserver.Pusher; channelsd.sendmany writes them, from a native
thread when large), never waiting; its own greenlet wakes only when it is needed.
"""

from __future__ import annotations

import math
import time
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import gevent.event
import orjson

from channelsd import turns
from channelsd.channel import Channel
from channelsd.table import Key

if TYPE_CHECKING:
    from channelsd.sendmany import Courier
    from channelsd.stream import Broker, _Message

# Pushes between two visits to the hub: a crowd of subscribers is written in turns.
PUSH_TURN = 256

# Batches a feed keeps for its slower subscribers: ~6 s of publishing, and never more frames
# than the broker's ring holds messages; one further behind starts over from a snapshot.
FEED_BATCHES = 64


class _Batch:
    """One publish's frames for a feed, joined once; `seqs[i]` is the message of the frame
    that ends at `ends[i]` in `joined` (compact: no second copy of each frame)."""

    __slots__ = ("first", "last", "joined", "seqs", "ends")

    def __init__(self, first: int, last: int, frames: list[tuple[int, bytes]]) -> None:
        self.first = first
        self.last = last
        self.joined = b"".join(f for _, f in frames)
        self.seqs = array("q", (s for s, _ in frames))
        self.ends = array("q", accumulate(len(f) for _, f in frames))

    def __len__(self) -> int:
        return len(self.seqs)

    def after(self, seq: int) -> bytes:
        """The frames of messages after `seq`."""
        if self.first > seq:
            return self.joined
        i = bisect_right(self.seqs, seq)
        return self.joined[self.ends[i - 1] if i else 0 :]


class Parked:
    """A subscriber that has caught up with its feed, written to by the publisher (Feed.push)
    until something needs its own greenlet: `woken` is set then."""

    __slots__ = ("pusher", "feed", "position", "until", "wrote_at", "woken", "wakes")

    def __init__(self, pusher: Any) -> None:
        # channelsd.httpserver.Pusher (ready, push, flush); None: it never parks
        self.pusher = pusher
        self.feed: Feed | None = None  # the feed it is parked in
        self.wakes = 0  # Broker.wake_one's calls for it
        self.position = 0  # the last message it was sent (or had nothing to be sent of)
        self.until = math.inf  # when its greenlet must ask again whether it has ended
        self.wrote_at = 0.0  # time.monotonic() of its last write
        self.woken = gevent.event.Event()

    # The courier's addressee (channelsd.sendmany): its pusher's bytes, and its greenlet
    # woken when they are left for it to write.

    def claim(self, piece: bytes) -> int | None:
        fd = self.pusher.claim(piece)
        if fd is None and self.pusher.owing:
            # Not the courier's to write (a short send's rest waits, no descriptor, or an
            # earlier piece is still owed: two publishes' pushes handed over out of order,
            # found by an outside attack): its greenlet writes everything owed, in order.
            self.wake()
        return fd

    def sent(self, piece: bytes, n: int) -> None:
        if not self.pusher.sent(piece, n):
            self.wake()

    def wake(self) -> None:
        """Back to its own greenlet (woken, if it waits)."""
        if self.feed is not None:
            self.feed.unpark(self)
        else:
            self.woken.set()


class Feed:
    """What one kind of subscriber is sent: the same scope, role narrowing and filters.

    Every subscriber of a feed started from a snapshot (or caught up) at or after the feed's
    start, so the channels it holds are the feed's `visible` set, give or take changes not
    yet published when its snapshot was rendered; those come next anyway, and a create for a
    channel it holds, or a destroy for one it does not, changes nothing for a client. So the
    frames are decided and serialised once per batch for all of them."""

    __slots__ = (
        "in_scope",
        "keep",
        "visible",
        "unsure",
        "last",
        "batches",
        "held",
        "cut",
        "users",
        "parked",
    )

    def __init__(
        self,
        in_scope: Callable[[Channel], bool],
        keep: Callable[[dict[str, Any]], bool],
        position: int,
        visible: set[Key],
    ) -> None:
        self.in_scope = in_scope
        self.keep = keep
        self.visible = set(visible)
        # Channels a subscriber may hold that the feed was not told of (its snapshot rendered
        # a change not yet published: stream._join): its next message tells them again, as a
        # create while in scope and a destroy once out of it.
        self.unsure: set[Key] = set()
        self.last = position  # the last message this feed has decided about
        self.batches: deque[_Batch] = deque()
        self.held = 0  # frames in the batches
        # The last message whose frame is no longer held (a batch dropped, or the ring had
        # moved on): a subscriber at or before it cannot be served from the feed.
        self.cut = position
        self.users = 0
        self.parked: set[Parked] = set()

    def catch_up(self, broker: Broker) -> None:
        messages = broker.since(self.last)
        if messages is None:  # the ring moved on past this feed: its subscribers start over
            self.batches.clear()
            self.held = 0
            self.last = self.cut = broker.seq
            # The destroys the ring lost never take their channels out of `visible`: those
            # gone are dropped here, or a feed that lives for weeks would keep every channel a
            # burst (a node purged, a reconcile) ever hid from it.
            row = broker.table.row
            self.visible = {key for key in self.visible if row(*key) is not None}
            self.unsure.clear()  # (every subscriber starts over from a snapshot)
            self.wake_parked()  # each starts over from a snapshot, in its own greenlet
            return
        before = self.last
        frames = []
        for msg in messages:
            # Destroys of any channel in scope, visible to the feed or not: a subscriber that
            # resumed may hold one the feed never told (a destroy it lacks changes nothing).
            frame = frame_for(
                broker, msg, self.visible, self.in_scope, self.keep, True, self.unsure
            )
            if frame is not None:
                frames.append((msg.seq, frame))
        if not messages:
            return
        self.last = messages[-1].seq
        batch = None
        if frames:
            batch = _Batch(messages[0].seq, self.last, frames)
            self.batches.append(batch)
            self.held += len(frames)
        # Bounded in frames as well as batches: a publish that catches thousands of messages
        # (a busy switch, a reconcile) must not multiply what 64 batches hold.
        limit = broker.ring.maxlen or FEED_BATCHES
        while self.batches and (len(self.batches) > FEED_BATCHES or self.held > limit):
            dropped = self.batches.popleft()
            self.held -= len(dropped)
            self.cut = dropped.last
        if self.parked:
            data = batch.joined if batch is not None else b""
            self.push(before, self.last, data, broker.courier)

    def push(self, before: int, last: int, data: bytes, courier: Courier) -> None:
        """The messages after `before` up to `last` (their frames: `data`) to every parked
        subscriber that was sent everything up to `before`, handed to `courier` in one
        publish. One whose socket did not take it all, or whose end must be checked, is woken
        instead."""
        chunk = b"%x\r\n%s\r\n" % (len(data), data) if data else b""  # HTTP/1.1's, once
        pairs: list[tuple[Parked, bytes]] = []
        done = 0
        for parked in list(self.parked):
            if parked not in self.parked or parked.position != before:
                continue  # it left, or caught up by itself, while this one was handed over
            # (read for each: a token's exp is kept to the push, not to the batch's start)
            now = time.monotonic()
            if now >= parked.until or not parked.pusher.ready:
                self.unpark(parked)
                continue
            if data:  # (no frame of these messages is for this feed: nothing to write)
                pairs.append((parked, parked.pusher.push(data, chunk)))
                parked.wrote_at = now
                done += 1
            parked.position = last
            if last != self.last:  # (a later publish went on meanwhile)
                self.unpark(parked)
            if data and done % PUSH_TURN == 0:
                turns.pause()
        if pairs:
            courier(pairs)

    def park(self, parked: Parked) -> None:
        self.parked.add(parked)
        parked.feed = self

    def unpark(self, parked: Parked) -> None:
        """Back to its own greenlet (woken, if it waits)."""
        self.parked.discard(parked)
        parked.feed = None
        parked.woken.set()

    def wake_parked(self) -> None:
        for parked in list(self.parked):
            self.unpark(parked)

    def after(self, seq: int) -> bytes | None:
        """Every frame after `seq`, or None when this feed no longer reaches back that far."""
        if seq >= self.last:
            return b""
        if seq < self.cut:
            return None
        return b"".join(batch.after(seq) for batch in self.batches if batch.last > seq)


def sse_frame(broker: Broker, seq: int, event: str, data: bytes) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (broker.event_id(seq), event.encode(), data)


def gone_frame(broker: Broker, seq: int, key: Key) -> bytes:
    """A destroy for a channel that is still up but has left a subscriber's scope: only its
    name (what it became is not this subscriber's to see)."""
    gone = orjson.dumps({"uuid": key[1], "node": key[0]})
    return sse_frame(broker, seq, "destroy", gone)


def frame_for(
    broker: Broker,
    msg: _Message,
    seen: set[Key],
    in_scope: Callable[[Channel], bool],
    keep: Callable[[dict[str, Any]], bool],
    resumed: bool,
    unsure: set[Key] | None = None,
) -> bytes | None:
    """What this subscriber is sent for one shared message, if anything. A channel in
    `unsure` (a feed's: some of its subscribers may hold it, `seen` does not) is told whole
    once: created while in scope, destroyed once out of it."""
    if msg.kind == "mark":  # (stream.MARK: where a watch began, nothing to tell)
        return None
    key = msg.key
    maybe = False
    if unsure and key in unsure:
        unsure.discard(key)
        maybe = True
    if msg.kind == "destroy":
        if key in seen or maybe or (resumed and in_scope(msg.channel)):
            seen.discard(key)
            return sse_frame(broker, msg.seq, "destroy", msg.data)
        return None
    if not (in_scope(msg.channel) and keep(msg.item)):  # e.g. moved to another account
        if key in seen or maybe:
            seen.discard(key)
            return gone_frame(broker, msg.seq, key)
        return None
    if key in seen and msg.kind == "update" and not maybe:
        return sse_frame(broker, msg.seq, "update", msg.data)
    seen.add(key)  # new to this subscriber: the whole item
    return sse_frame(broker, msg.seq, "create", msg.full)
