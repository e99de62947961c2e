"""Live channel events as Server-Sent Events.

Ingest pays O(1) per table change whatever the number of subscribers: the change is appended
to a bounded ring with a sequence number and one gevent Event wakes the subscribers. Each
subscriber greenlet then reads the ring from its own position, keeps only what its token may
see, and diffs against what it last sent, so several changes to one channel between two
wake-ups go out as one `update` with the changed keys.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import gevent.event
import orjson

from channelsd.table import Channel, ChannelTable

KEEPALIVE_SECONDS = 15.0
# Keys that change every second by themselves: not worth an update message.
_VOLATILE = ("elapsed_s",)


class _Change:
    # A destroyed Channel keeps its fields, so it still tells whom its destroy concerns.
    __slots__ = ("seq", "kind", "channel")

    def __init__(self, seq: int, kind: str, channel: Channel) -> None:
        self.seq = seq
        self.kind = kind
        self.channel = channel


class Broker:
    """The ring of recent table changes, fed by the table's listener hook."""

    def __init__(self, table: ChannelTable, size: int = 10_000) -> None:
        self.table = table
        self.ring: deque[_Change] = deque(maxlen=size)
        self.seq = 0
        self._wake = gevent.event.Event()
        self.subscribers = 0
        self.closed = False
        table.listener = self._on_change

    def close(self) -> None:
        """End every stream (the daemon is stopping)."""
        self.closed = True
        self._wake.set()

    def _on_change(self, kind: str, ch: Channel, _info: Any) -> None:
        self.seq += 1
        self.ring.append(_Change(self.seq, kind, ch))
        if self.subscribers:
            # Wake everybody once; the next waiters get a fresh Event.
            wake, self._wake = self._wake, gevent.event.Event()
            wake.set()

    def since(self, seq: int) -> list[_Change] | None:
        """Changes after `seq`, or None when the ring no longer reaches back that far."""
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
        """Sleep until there is a change after `seq` (or the timeout); never misses one."""
        if self.seq <= seq and not self.closed:
            self._wake.wait(timeout)


def _frame(seq: int, event: str, data: Any) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, event.encode(), orjson.dumps(data))


def subscribe(
    broker: Broker,
    visible: Callable[[Channel], bool],
    snapshot: Callable[[], list[Channel]],
    render: Callable[[Channel], dict[str, Any]],
    last_event_id: str | None,
) -> Iterator[bytes]:
    """The byte stream of one subscriber: snapshot (or catch-up), then changes as they come.

    `visible(ch)` says whether this subscriber may see the channel (live or destroyed),
    `render(ch)` builds the item the list routes would show.
    """
    sent: dict[str, dict[str, Any]] = {}
    position: int | None = None
    # After a resume the client knows channels we have no record of having sent.
    resumed = False
    if last_event_id is not None and last_event_id.isdigit():
        position = int(last_event_id)
        resumed = position <= broker.seq and broker.since(position) is not None
        if not resumed:
            position = None  # too much was missed (or a foreign id): start over
    if position is None:
        position = broker.seq
        items = []
        for ch in snapshot():
            item = render(ch)
            sent[ch.uuid] = item
            items.append(item)
        yield _frame(position, "snapshot", items)
    broker.subscribers += 1
    try:
        last_write = time.monotonic()
        while not broker.closed:
            changes = broker.since(position)
            if changes is None:  # this subscriber fell behind the ring
                position = broker.seq
                items = [render(ch) for ch in snapshot()]
                sent = {i["uuid"]: i for i in items}
                resumed = False
                yield _frame(position, "snapshot", items)
                continue
            if changes:
                position = changes[-1].seq
                latest: dict[str, _Change] = {}
                for change in changes:
                    latest[change.channel.uuid] = change
                # Newest change per channel, sent in sequence order so ids only ever grow.
                for change in sorted(latest.values(), key=lambda c: c.seq):
                    uuid = change.channel.uuid
                    frame = _message(change, uuid, sent, visible, render, resumed)
                    if frame is not None:
                        yield _frame(change.seq, *frame)
                        last_write = time.monotonic()
            if time.monotonic() - last_write >= KEEPALIVE_SECONDS:
                yield b": keepalive\n\n"
                last_write = time.monotonic()
            broker.wait_after(position, KEEPALIVE_SECONDS)
    finally:
        broker.subscribers -= 1


def _message(
    change: _Change,
    uuid: str,
    sent: dict[str, dict[str, Any]],
    visible: Callable[[Channel], bool],
    render: Callable[[Channel], dict[str, Any]],
    resumed: bool,
) -> tuple[str, Any] | None:
    ch = change.channel
    if change.kind == "destroy":
        known = sent.pop(uuid, None)
        if known is None and not (resumed and visible(ch)):
            return None
        return "destroy", {"uuid": uuid}
    if not visible(ch):  # e.g. moved to another account: gone for this subscriber
        return ("destroy", {"uuid": uuid}) if sent.pop(uuid, None) is not None else None
    item = render(ch)
    before = sent.get(uuid)
    sent[uuid] = item
    if before is None:
        return "create", item
    changed = {k: v for k, v in item.items() if before.get(k) != v and k not in _VOLATILE}
    removed = [k for k in before if k not in item]
    if not changed and not removed:
        return None
    data: dict[str, Any] = {"uuid": uuid, "changed": changed}
    if removed:
        data["removed"] = removed
    return "update", data
