"""Live channel events as Server-Sent Events.

The work is shared, so that a crowd of subscribers does not slow ingest:

* a table change costs O(1): the channel is noted as pending, and only when a subscriber
  watches its account (or every account), now or within RESUME_GRACE: a crowd on one account
  of a hundred does not make the broker render the other ninety-nine's changes;
* every PUBLISH_INTERVAL the broker turns the pending channels into messages once — renders
  the item, diffs it against what it last published, serialises it — and appends them to a
  bounded ring with a sequence number, then wakes the subscribers;
* subscribers of one kind (the same scope, role narrowing and filters: a feed) share the
  next step too: the feed decides once per batch which messages they may see and turns them
  into frames, and each of them writes the same bytes, one write per batch;
* a subscriber that has caught up is written to by the publisher itself (its Pusher), without
  a wake-up of its greenlet; that greenlet wakes only for what needs it: a keepalive, a socket
  that did not take a whole batch, a check of its token, its end.

Several changes to a channel within an interval go out as one message. Channels are told
apart by (node, uuid): the same uuid on two nodes is two channels, and every message names its
node. Event ids carry the broker's epoch, so that an id from before a restart of the daemon is
never taken for one of this run's.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import gevent
import gevent.event
import orjson

from channelsd.cadence import Cadence
from channelsd.channel import Channel, kept_json
from channelsd.feeds import Feed, Parked, frame_for, gone_frame, sse_frame
from channelsd.listing import in_slices
from channelsd.sendmany import Courier
from channelsd.table import ChannelTable, Key
from channelsd.validate import whole_number

KEEPALIVE_SECONDS = 15.0
# How long changes are still published after the last subscriber left, so that it can
# resume (Last-Event-ID) instead of starting over.
RESUME_GRACE = 30.0
PUBLISH_INTERVAL = 0.1
# Keys that change every second by themselves: not worth an update message.
_VOLATILE = ("elapsed_s",)
# What a system-wide subscriber watches: every account (and channels with none).
EVERY_ACCOUNT = "*"
# A message that tells nobody anything: where a new watch began (Broker.joined).
MARK = "mark"


def _changed(item: dict[str, Any], told: dict[str, Any]) -> dict[str, Any]:
    """The keys of `item` whose values differ from what a client was `told`."""
    return {k: v for k, v in item.items() if told.get(k) != v and k not in _VOLATILE}


class _Was:
    """A channel's fields that a stream is scoped by (account, owner, device), as a client
    was last shown them: a scope's test (`in_scope`) reads them as it reads a Channel's."""

    __slots__ = ("account_id", "owner_id", "authorizing_id")

    def __init__(self, item: dict[str, Any]) -> None:
        self.account_id = item.get("account_id")
        self.owner_id = item.get("owner_id")
        self.authorizing_id = item.get("authorizing_id")


class _Message:
    """One published change: its kind, the channel, and the bytes every subscriber shares."""

    __slots__ = ("seq", "kind", "key", "channel", "item", "data", "was", "_full")

    def __init__(
        self,
        seq: int,
        kind: str,
        key: Key | None,
        channel: Channel | None,
        item: dict[str, Any] | None,
        data: bytes,
        was: tuple[_Was, ...] = (),
    ) -> None:
        self.seq = seq
        # The channel as clients were last shown it before this message (published, and in a
        # snapshot since): whether a resumed client may hold it. Empty: never shown.
        self.was = was
        self.kind = kind
        self.key = key  # as it was when the change happened: a renamed channel moves on
        self.channel = channel  # a destroyed Channel keeps its fields: whom it concerned
        self.item = item
        self.data = data
        # The whole item as JSON, for a subscriber to whom the channel is new: made when one
        # needs it (most updates never reach such a subscriber, and the ring holds thousands).
        self._full = data if kind == "create" else None

    @property
    def full(self) -> bytes:
        if self._full is None:
            self._full = kept_json(self.item) if self.item else b""
        return self._full


class Broker:
    """Pending changes → published messages in a ring; fed by the table's listener hook."""

    def __init__(
        self,
        table: ChannelTable,
        size: int = 10_000,
        interval: float = PUBLISH_INTERVAL,
        courier: Courier | None = None,
    ) -> None:
        self.table = table
        # Writes each feed's batch to its parked subscribers (Feed.push). The daemon's is
        # shared with the websocket hub (one thread sends for both), and is its to close.
        self._own_courier = courier is None
        self.courier: Courier = courier if courier is not None else Courier()
        self.ring: deque[_Message] = deque(maxlen=size)
        self.seq = 0
        # This run's mark on its event ids (see ids()).
        self.epoch = os.urandom(4).hex()
        self._cadence = Cadence(interval, self._publish_pending)
        self.subscribers = 0
        self.closed = False
        self._pending: dict[Key, tuple[Channel, bool]] = {}
        # Changes happened while nobody listened (the ring no longer tells them).
        self._gap = False
        # Idle, and every change since has been taken as a gap: until someone subscribes,
        # the table does not call _on_change at all (only a subscription ends idleness; time
        # only prolongs it).
        self._quiet = False
        self._published: dict[Key, dict[str, Any]] = {}
        # Items a snapshot rendered while their change was pending (not yet published).
        self._shown: dict[Key, dict[str, Any]] = {}
        self._wake = gevent.event.Event()
        # How many times wake() was called: a subscriber that was writing (no one's to wake)
        # when it was, sees it changed and asks whether it ended before it waits.
        self.wakes = 0
        self.feeds: dict[Any, Feed] = {}
        self._left = -RESUME_GRACE  # when the last subscriber left
        # The accounts subscribers watch (EVERY_ACCOUNT: all of them): how many watch each
        # now, and from which message on every change of its channels is in the ring (the
        # sequence number when it began to be watched). One nobody watches any more is kept
        # for RESUME_GRACE (`_unwatched`: since when), so that a client that comes back
        # resumes. Changes of the others' channels are not rendered at all.
        self._watchers: dict[str, int] = {}
        self._watched_from: dict[str, int] = {}
        self._unwatched: dict[str, float] = {}
        self._skipped = False  # a change was left out since the last message
        table.listen(self._on_change)

    @property
    def idle(self) -> bool:
        """Nobody listens, and nobody left less than RESUME_GRACE ago (a client that
        reconnects within it resumes where it was, instead of starting over)."""
        if self.subscribers:
            return False
        return time.monotonic() - self._left > RESUME_GRACE

    def _on_change(self, kind: str, ch: Channel, _info: Any) -> None:
        if self._quiet:
            return
        if not self._pending and self.idle:
            # Nobody listens: nothing to render or keep, but a client resuming from before
            # this gap must get a fresh snapshot, not a silent hole (see since()).
            if self.ring or self._published:
                self._forget()
            if not self._gap:
                self._gap = True
                self.seq += 1
            self._quiet = True
            self.table.unlisten(self._on_change)
            return
        key = ch.key
        watched = self._watched_from
        if (
            EVERY_ACCOUNT not in watched
            and ch.account_id not in watched
            and key not in self._published
            and key not in self._pending
        ):
            self._skipped = True
            return  # nobody watches its account, and no subscriber was told of it
        self._pending[key] = (ch, kind == "destroy")
        self._cadence.noted()  # (closed with the broker: nothing is armed then)

    def joined(self, account: str = EVERY_ACCOUNT) -> None:
        """A subscriber came, watching `account`'s channels (EVERY_ACCOUNT: all): no gap from
        here on, and the table tells changes again."""
        self.subscribers += 1
        self._gap = False
        if self._quiet:
            self._quiet = False
            self.table.listen(self._on_change)
        self._watchers[account] = self._watchers.get(account, 0) + 1
        self._unwatched.pop(account, None)
        if account not in self._watched_from:
            if self._skipped:
                # Changes were left out since the last message: a client at its number may
                # lack them, so the watch begins after a mark of its own (seq moves on).
                self.seq += 1
                self.ring.append(_Message(self.seq, MARK, None, None, None, b""))
                self._skipped = False
            self._watched_from[account] = self.seq

    def left(self, account: str = EVERY_ACCOUNT) -> None:
        """A subscriber that watched `account` left: its account is watched on for
        RESUME_GRACE (forget_unwatched), for it to resume."""
        self.subscribers -= 1
        if not self.subscribers:
            self._left = time.monotonic()
        count = self._watchers[account] - 1
        if count:
            self._watchers[account] = count
        else:
            del self._watchers[account]
            self._unwatched[account] = time.monotonic()

    def covers(self, account: str, position: int) -> bool:
        """Whether every change of `account`'s channels after message `position` is in the
        ring (given that the ring reaches back that far): it, or every account, was watched
        from then on."""
        return any(
            self._watched_from.get(watch, math.inf) <= position
            for watch in (account, EVERY_ACCOUNT)
        )

    def forget_unwatched(self) -> None:
        """Stop rendering the changes of accounts nobody has watched for RESUME_GRACE."""
        if not self._unwatched:
            return
        now = time.monotonic()
        for account, since in list(self._unwatched.items()):
            if now - since > RESUME_GRACE:
                del self._unwatched[account]
                del self._watched_from[account]

    def release_idle(self) -> None:
        """Nobody listens any more: the ring and the published items go now, not at the next
        change (after the day's last call none comes; the daemon's tick calls this). A client
        resuming from before gets a snapshot, as after any gap (since() reaches back no more).
        Accounts nobody has watched for RESUME_GRACE are no longer rendered."""
        self.forget_unwatched()
        if not self._pending and self.idle:
            self._forget()

    def _forget(self) -> None:
        """Nobody listens: no messages and no published items are kept (memory, reconcile
        bursts); a client resuming from before gets a snapshot, since() reaching back no more."""
        self.ring.clear()
        self._published.clear()
        self._shown.clear()

    def render(self, ch: Channel) -> dict[str, Any]:
        return ch.to_item(time.time(), self.table.is_stale(ch))

    def publish(self) -> None:
        """Turn what changed since the last publish into messages (its cadence calls this on
        time)."""
        self._cadence.run()

    def _publish_pending(self) -> None:
        pending, self._pending = self._pending, {}
        if self.idle:
            # Nobody listens: render nothing and keep no copies (memory, reconcile bursts).
            # The gap is recorded by emptying the ring, so a client resuming from before it
            # gets a fresh snapshot instead of a silent hole.
            self._forget()
            self.seq += 1
            return
        # A reconcile can change thousands at once: rendered in slices, letting requests in.
        for part in in_slices(list(pending.items())):
            if self._quiet:
                # The grace ended between two slices and a change took the broker quiet (the
                # ring and the published items forgotten, a gap): the rest is not kept, or
                # the next subscriber's changes would be diffed against these stale items.
                self._forget()
                return
            for key, (ch, destroyed) in part:
                self._publish_one(key, ch, destroyed)
        for feed in list(self.feeds.values()):
            feed.catch_up(self)
        if self.subscribers:
            self._wake_waiting()

    def feed(
        self,
        key: Any,
        in_scope: Callable[[Channel], bool],
        keep: Callable[[dict[str, Any]], bool],
        position: int,
        visible: set[Key],
    ) -> Feed:
        """The feed of this kind of subscriber, started at `position` with the channels a
        subscriber holds then (its snapshot) when there is none yet."""
        feed = self.feeds.get(key)
        if feed is None:
            feed = self.feeds[key] = Feed(in_scope, keep, position, visible)
        feed.users += 1
        return feed

    def leave(self, key: Any, feed: Feed) -> None:
        feed.users -= 1
        if not feed.users and self.feeds.get(key) is feed:
            del self.feeds[key]

    def wake(self) -> None:
        """Wake every subscriber, those the publisher writes to included: to let one that
        was ended (revoked, gone) see it and stop."""
        self.wakes += 1
        self._wake_waiting()
        for feed in list(self.feeds.values()):
            feed.wake_parked()

    def wake_one(self, parked: Parked) -> None:
        """One subscriber's subscription ended (revoked, its client gone): wake it alone, not
        every parked subscriber of every feed (a crowd's churn would wake the crowd)."""
        parked.wakes += 1
        if parked.feed is not None:
            parked.feed.unpark(parked)
        else:  # it waits with those who write for themselves, or it is writing
            self._wake_waiting()

    def _wake_waiting(self) -> None:
        """Wake the subscribers that write for themselves: to send what was published."""
        wake, self._wake = self._wake, gevent.event.Event()
        wake.set()

    def _publish_one(self, key: Key, ch: Channel, destroyed: bool) -> None:
        node, uuid = key
        before = self._published.get(key)
        # A snapshot rendered its change before this publish: told against that too, and
        # the message says whom a resumed client may have been shown it as.
        shown = self._shown.pop(key, None)
        was = tuple(_Was(it) for it in (before, shown) if it is not None)
        if destroyed:
            # Even one never published: a subscriber's snapshot may hold it.
            self._published.pop(key, None)
            ended = ch.end_item(time.time())
            ended["uuid"] = uuid
            ended["node"] = node
            self._append("destroy", key, ch, None, kept_json(ended), was)
            return
        item = self.render(ch)
        watched = self._watched_from
        if EVERY_ACCOUNT not in watched and ch.account_id not in watched:
            # Moved out of the accounts watched (or one nobody watches any more): this last
            # message tells its subscribers it went; its next changes are not rendered.
            self._published.pop(key, None)
        else:
            self._published[key] = item
        if before is None:
            self._append("create", key, ch, item, kept_json(item), was)
            return
        changed = _changed(item, before)
        removed = [k for k in before if k not in item]
        if shown is not None:  # (rare: a snapshot rendered it while the change was pending)
            changed.update(_changed(item, shown))
            removed += [k for k in shown if k not in item and k not in before]
        if changed or removed:
            data: dict[str, Any] = {"uuid": uuid, "node": node, "changed": changed}
            if removed:
                data["removed"] = removed
            self._append("update", key, ch, item, kept_json(data), was)

    def _append(
        self,
        kind: str,
        key: Key,
        ch: Channel,
        item: dict[str, Any] | None,
        data: bytes,
        was: tuple[_Was, ...] = (),
    ) -> None:
        self.seq += 1
        self._skipped = False
        self.ring.append(_Message(self.seq, kind, key, ch, item, data, was))

    def event_id(self, seq: int) -> bytes:
        return b"%s-%d" % (self.epoch.encode(), seq)

    def position_of(self, event_id: str | None) -> int | None:
        """The sequence number a Last-Event-ID of this run names, or None: missing, of
        another run (before a restart), or not an id at all."""
        epoch, _, seq = (event_id or "").partition("-")
        return whole_number(seq) if epoch == self.epoch else None

    def close(self) -> None:
        """End every stream (the daemon is stopping)."""
        self.closed = True
        self._cadence.close()
        if self._own_courier:
            self.courier.close()  # (what is still carried goes from the hub)
        self.wake()

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

    def wait_for(self, feed: Feed, seq: int, timeout: float) -> None:
        """Sleep until the feed has frames after `seq` (or the timeout, or a wake-up)."""
        if feed.last <= seq and not self.closed:
            self._wake.wait(timeout)


def subscribe(
    broker: Broker,
    in_scope: Callable[[Channel], bool],
    keep: Callable[[dict[str, Any]], bool],
    snapshot: Callable[[], list[Channel]],
    last_event_id: str | None,
    ended: Callable[[], bool] = lambda: False,
    kind: Any = None,
    parked: Parked | None = None,
    ask_by: Callable[[], float] = lambda: math.inf,
    account: str = EVERY_ACCOUNT,
) -> Iterator[bytes]:
    """The byte stream of one subscriber: snapshot (or catch-up), then its feed's frames.

    `in_scope(ch)` says whether this subscriber may see the channel (account, role), `keep`
    applies its filters to a rendered item, and `kind` names that combination: subscribers
    of one kind share a feed (None: a feed of its own). The stream stops once `ended()` (its
    token was revoked; whoever ends it calls `broker.wake_one(parked)`); `ask_by()` says by
    when (monotonic) `ended()` must be asked again if nothing wakes the stream (its token
    expires).

    `parked` is this subscriber as the broker knows it; with a pusher (the stream's
    connection), once it has caught up it is written to by the publisher (Feed.push) until
    its greenlet is needed. `account` is the account whose channels `in_scope` may take
    (EVERY_ACCOUNT: any): the broker renders the changes of watched accounts only.
    """
    key = kind if kind is not None else object()
    me = parked if parked is not None else Parked(None)
    position = broker.position_of(last_event_id)
    resumed = position is not None and position <= broker.seq
    resumed = resumed and broker.since(position) is not None  # type: ignore[arg-type]
    # (asked before this subscriber watches: its own watch begins now, after the position)
    resumed = resumed and broker.covers(account, position)  # type: ignore[arg-type]
    # Counted from the start: what changes while the snapshot is taken and sent is kept.
    broker.joined(account)
    feed: Feed | None = None
    try:
        if resumed:
            # The client knows channels this subscriber never told it: catch up from the ring
            # on its own (destroys of any channel in scope), then follow the feed.
            assert position is not None
            # What it holds is not known here: a channel shown in its scope before (published,
            # or in a snapshot) may be on its screen, and is told whole again (a create, or a
            # destroy once out of scope: `was` is tested by its own scope, so nothing out of
            # it is named). All of it is decided before anything is written: what is
            # published while a slow socket takes it comes from the feed, after `upto`.
            upto = broker.seq
            seen: set[Key] = set()
            frames = [b": resumed\n\n"]
            for msg in broker.since(position) or ():
                told = any(in_scope(was) for was in msg.was)  # type: ignore[arg-type]
                frame = frame_for(
                    broker, msg, seen, in_scope, keep, True, {msg.key} if told else None
                )
                if frame is not None:
                    frames.append(frame)
            position = upto
            visible = {k for k in _visible(broker, in_scope, keep, snapshot)}
            feed = broker.feed(key, in_scope, keep, position, visible)
            # (the status line goes out with these first bytes: on a quiet account nothing
            # would come before the keepalive, and a client or a proxy's header timeout would
            # take the resumed stream for a dead one)
            yield b"".join(frames) + _join(broker, feed, visible, in_scope, keep, position)
        else:
            position, frame, visible = _snapshot(broker, in_scope, keep, snapshot)
            feed = broker.feed(key, in_scope, keep, position, visible)
            yield frame + _join(broker, feed, visible, in_scope, keep, position)
        last_write = time.monotonic()
        while True:
            # (taken before ended() is asked: a wake-up from then on is not missed)
            wakes = broker.wakes + me.wakes
            if broker.closed or ended():
                break
            out = feed.after(position)
            if out is None:  # this subscriber fell behind its feed
                position, frame, held = _snapshot(broker, in_scope, keep, snapshot)
                position = min(position, feed.last)
                yield frame + _join(broker, feed, held, in_scope, keep, position)
                continue
            position = max(position, feed.last)
            if out:
                yield out  # one write per batch, not per message
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= KEEPALIVE_SECONDS:
                yield b": keepalive\n\n"
                last_write = time.monotonic()
            if broker.wakes + me.wakes != wakes:
                # Woken while it wrote (its token revoked, its client gone?): nobody was
                # parked or waiting to be woken, and parking clears a wake-up. Asked again
                # first, or the publisher would write to it until its next keepalive.
                continue
            if me.pusher is not None and position == feed.last and not broker.closed:
                position, last_write = _parked(feed, me, position, last_write, ask_by())
            else:
                broker.wait_for(feed, position, KEEPALIVE_SECONDS)
    finally:
        broker.left(account)
        if feed is not None:
            broker.leave(key, feed)


def _join(
    broker: Broker,
    feed: Feed,
    held: set[Key],
    in_scope: Callable[[Channel], bool],
    keep: Callable[[dict[str, Any]], bool],
    position: int,
) -> bytes:
    """A subscriber joins `feed` holding `held` (its snapshot's channels); the feed decides
    each message against the channels its subscribers hold (`visible`). One this subscriber
    holds and the feed does not (a change not yet published when the snapshot was rendered:
    a new call) is marked unsure while it is still in scope (its next message goes whole to
    every subscriber: a create, or a destroy once out of scope; as visible, the others would
    get an update of a call they never had); one that has left the scope meanwhile (moved to
    another account, filtered out) is taken out of its view at once (the destroy frames
    returned). Before, a call that left the scope before its first publish stayed in the
    view of each subscriber whose snapshot had it, for good."""
    row = broker.table.row
    frames = []
    # Held by the feed's subscribers and not by this one (a change pending when its snapshot
    # was rendered took the channel out of its scope): the next message goes whole too, or
    # this one would get an update of a channel it never had.
    feed.unsure.update(feed.visible - held)
    for key in held - feed.visible:
        ch = row(*key)
        if ch is not None and in_scope(ch) and keep(broker.render(ch)):
            feed.unsure.add(key)
        else:
            frames.append(gone_frame(broker, position, key))
    return b"".join(frames)


def _parked(
    feed: Feed, parked: Parked, position: int, last_write: float, until: float
) -> tuple[int, float]:
    """Wait while the publisher writes to this caught-up subscriber: until its socket left a
    batch unwritten, its end must be checked, or a keepalive is due. Its position and last
    write after that, what a push left written first."""
    # What a push's send left while this greenlet was away (it was not parked to be woken)
    # goes first: after a wait, it would wait for the next publish or keepalive.
    parked.pusher.flush()
    parked.position = position
    parked.wrote_at = last_write
    parked.until = until
    parked.woken.clear()
    feed.park(parked)
    try:
        wake_by = min(until, last_write + KEEPALIVE_SECONDS)  # (pushes may move the keepalive)
        parked.woken.wait(max(0.0, wake_by - time.monotonic()))
    finally:
        feed.parked.discard(parked)
        parked.feed = None
    parked.pusher.flush()
    return parked.position, parked.wrote_at


def _visible(
    broker: Broker,
    in_scope: Callable[[Channel], bool],
    keep: Callable[[dict[str, Any]], bool],
    snapshot: Callable[[], list[Channel]],
) -> Iterator[Key]:
    for part in in_slices(snapshot()):
        for ch in part:
            if in_scope(ch) and keep(broker.render(ch)):
                yield ch.key


def _snapshot(
    broker: Broker,
    in_scope: Callable[[Channel], bool],
    keep: Callable[[dict[str, Any]], bool],
    snapshot: Callable[[], list[Channel]],
) -> tuple[int, bytes, set[Key]]:
    """The channels in scope as one `snapshot` event, ending at the sequence number taken
    first: rendered in slices (other requests and ingest run between them), because whatever
    changes meanwhile is published after that number and reaches this subscriber next."""
    position = broker.seq
    channels = snapshot()
    items = []
    keys = set()
    published, pending, row = broker._published, broker._pending, broker.table.row
    shown = broker._shown
    for part in in_slices(channels):
        for ch in part:
            if in_scope(ch):
                item = broker.render(ch)
                # What this subscriber now holds is what the next change of the channel is
                # told against, unless a change is on its way to others already.
                # A channel destroyed while the snapshot was rendered (its destroy published
                # meanwhile, between two slices) is not: nothing would ever take it out.
                key = ch.key
                if key in pending:
                    shown[key] = item  # the publish tells its change against this too
                elif key not in published and row(*key) is ch:
                    published[key] = item
                if keep(item):
                    items.append(item)
                    keys.add(key)
    return position, sse_frame(broker, position, "snapshot", orjson.dumps(items)), keys
