"""Live channel events as Server-Sent Events.

The work is shared, so that a crowd of subscribers does not slow ingest:

* a table change costs O(1): the channel is noted as pending;
* every PUBLISH_INTERVAL the broker turns the pending channels into messages once — renders
  the item, diffs it against what it last published, serialises it — and appends them to a
  bounded ring with a sequence number, then wakes the subscribers;
* each subscriber only decides which messages it may see (scope, role, filters on the shared
  item) and writes the shared bytes, one write per batch.

Several changes to a channel within an interval go out as one message.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import gevent
import gevent.event
import orjson

from channelsd.channel import Channel
from channelsd.listing import in_slices
from channelsd.table import ChannelTable

KEEPALIVE_SECONDS = 15.0
PUBLISH_INTERVAL = 0.1
# Keys that change every second by themselves: not worth an update message.
_VOLATILE = ("elapsed_s",)


class _Message:
    """One published change: its kind, the channel, and the bytes every subscriber shares."""

    __slots__ = ("seq", "kind", "uuid", "channel", "item", "data", "full")

    def __init__(
        self,
        seq: int,
        kind: str,
        uuid: str,
        channel: Channel,
        item: dict[str, Any] | None,
        data: bytes,
    ) -> None:
        self.seq = seq
        self.kind = kind
        self.uuid = uuid  # as it was when the change happened: a renamed channel moves on
        self.channel = channel  # a destroyed Channel keeps its fields: whom it concerned
        self.item = item
        self.data = data
        self.full = data if kind == "create" else (orjson.dumps(item) if item else b"")


class Broker:
    """Pending changes → published messages in a ring; fed by the table's listener hook."""

    def __init__(
        self, table: ChannelTable, size: int = 10_000, interval: float = PUBLISH_INTERVAL
    ) -> None:
        self.table = table
        self.ring: deque[_Message] = deque(maxlen=size)
        self.seq = 0
        self.interval = interval
        self.subscribers = 0
        self.closed = False
        self._pending: dict[str, tuple[Channel, bool]] = {}
        self._published: dict[str, dict[str, Any]] = {}
        self._timer: gevent.Greenlet | None = None
        self._wake = gevent.event.Event()
        table.listen(self._on_change)

    def _on_change(self, kind: str, ch: Channel, _info: Any) -> None:
        self._pending[ch.uuid] = (ch, kind == "destroy")
        if self._timer is None and not self.closed:
            self._timer = gevent.spawn_later(self.interval, self.publish)

    def render(self, ch: Channel) -> dict[str, Any]:
        return ch.to_item(time.time(), self.table.is_stale(ch))

    def publish(self) -> None:
        """Turn what changed since the last call into messages (the timer calls this)."""
        self._timer = None
        pending, self._pending = self._pending, {}
        if not self.subscribers:
            # Nobody listens: render nothing and keep no copies (memory, reconcile bursts).
            # The gap is recorded by emptying the ring, so a client resuming from before it
            # gets a fresh snapshot instead of a silent hole.
            if self._published or self.ring:
                self._published.clear()
                self.ring.clear()
            self.seq += 1
            return
        # A reconcile can change thousands at once: rendered in slices, letting requests in.
        for part in in_slices(list(pending.items())):
            for uuid, (ch, destroyed) in part:
                self._publish_one(uuid, ch, destroyed)
        if self.subscribers:
            self.wake()

    def wake(self) -> None:
        """Wake every waiting subscriber: to send what was published, or to let one that
        was ended (revoked) see it and stop."""
        wake, self._wake = self._wake, gevent.event.Event()
        wake.set()

    def _publish_one(self, uuid: str, ch: Channel, destroyed: bool) -> None:
        before = self._published.get(uuid)
        if destroyed:
            # Even one never published: a subscriber's snapshot may hold it.
            self._published.pop(uuid, None)
            ended = ch.end_item(time.time())
            ended["uuid"] = uuid
            self._append("destroy", uuid, ch, None, orjson.dumps(ended))
            return
        item = self.render(ch)
        self._published[uuid] = item
        if before is None:
            self._append("create", uuid, ch, item, orjson.dumps(item))
            return
        changed = {k: v for k, v in item.items() if before.get(k) != v and k not in _VOLATILE}
        removed = [k for k in before if k not in item]
        if changed or removed:
            data: dict[str, Any] = {"uuid": uuid, "changed": changed}
            if removed:
                data["removed"] = removed
            self._append("update", uuid, ch, item, orjson.dumps(data))

    def _append(
        self, kind: str, uuid: str, ch: Channel, item: dict[str, Any] | None, data: bytes
    ) -> None:
        self.seq += 1
        self.ring.append(_Message(self.seq, kind, uuid, ch, item, data))

    def close(self) -> None:
        """End every stream (the daemon is stopping)."""
        self.closed = True
        if self._timer is not None:
            self._timer.kill(block=False)
        self._wake.set()

    def since(self, seq: int) -> list[_Message] | None:
        """Messages after `seq`, or None when the ring no longer reaches back that far."""
        missed = self.seq - seq
        if missed <= 0:
            return []
        if missed > len(self.ring):
            return None
        # Walk from the newest end: the cost is what this subscriber missed, not the ring.
        newest = list(islice(reversed(self.ring), missed))
        newest.reverse()
        return newest

    def wait_after(self, seq: int, timeout: float) -> None:
        """Sleep until there is a message after `seq` (or the timeout); never misses one."""
        if self.seq <= seq and not self.closed:
            self._wake.wait(timeout)


def _frame(seq: int, event: str, data: bytes) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, event.encode(), data)


def subscribe(
    broker: Broker,
    in_scope: Callable[[Channel], bool],
    keep: Callable[[dict[str, Any]], bool],
    snapshot: Callable[[], list[Channel]],
    last_event_id: str | None,
    ended: Callable[[], bool] = lambda: False,
) -> Iterator[bytes]:
    """The byte stream of one subscriber: snapshot (or catch-up), then messages as published.

    `in_scope(ch)` says whether this subscriber may see the channel (account, role), `keep`
    applies its filters to a rendered item; the stream stops once `ended()` (its token was
    revoked; whoever ends it wakes the broker).
    """
    seen: set[str] = set()
    position: int | None = None
    # After a resume the client knows channels this subscriber has no record of sending.
    resumed = False
    if last_event_id is not None and last_event_id.isdigit():
        position = int(last_event_id)
        resumed = position <= broker.seq and broker.since(position) is not None
        if not resumed:
            position = None  # too much was missed (or a foreign id): start over
    if position is None:
        position, frame, seen = _snapshot(broker, in_scope, keep, snapshot)
        yield frame
    broker.subscribers += 1
    try:
        last_write = time.monotonic()
        while not (broker.closed or ended()):
            messages = broker.since(position)
            if messages is None:  # this subscriber fell behind the ring
                position, frame, seen = _snapshot(broker, in_scope, keep, snapshot)
                resumed = False
                yield frame
                continue
            out = []
            for msg in messages:
                frame = _for(msg, seen, in_scope, keep, resumed)
                if frame is not None:
                    out.append(frame)
            if messages:
                position = messages[-1].seq
            if out:
                yield b"".join(out)  # one write per batch, not per message
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= KEEPALIVE_SECONDS:
                yield b": keepalive\n\n"
                last_write = time.monotonic()
            broker.wait_after(position, KEEPALIVE_SECONDS)
    finally:
        broker.subscribers -= 1


def _snapshot(
    broker: Broker,
    in_scope: Callable[[Channel], bool],
    keep: Callable[[dict[str, Any]], bool],
    snapshot: Callable[[], list[Channel]],
) -> tuple[int, bytes, set[str]]:
    # Not in slices: the snapshot and the sequence number it ends at must be one instant.
    items = [broker.render(ch) for ch in snapshot() if in_scope(ch)]
    items = [i for i in items if keep(i)]
    return (
        broker.seq,
        _frame(broker.seq, "snapshot", orjson.dumps(items)),
        {i["uuid"] for i in items},
    )


def _for(
    msg: _Message,
    seen: set[str],
    in_scope: Callable[[Channel], bool],
    keep: Callable[[dict[str, Any]], bool],
    resumed: bool,
) -> bytes | None:
    """What this subscriber is sent for one shared message, if anything."""
    uuid = msg.uuid
    if msg.kind == "destroy":
        if uuid in seen or (resumed and in_scope(msg.channel)):
            seen.discard(uuid)
            return _frame(msg.seq, "destroy", msg.data)
        return None
    if not (in_scope(msg.channel) and keep(msg.item)):  # e.g. moved to another account
        if uuid in seen:
            seen.discard(uuid)
            return _frame(msg.seq, "destroy", orjson.dumps({"uuid": uuid}))
        return None
    if uuid in seen and msg.kind == "update":
        return _frame(msg.seq, "update", msg.data)
    seen.add(uuid)  # new to this subscriber: the whole item
    return _frame(msg.seq, "create", msg.full)
