"""Table changes -> Kazoo call events -> the websockets subscribed to them.

The work is shared, as channelsd.stream shares it for the SSE streams, so that a crowd of
sockets does not slow ingest:

* a table change costs O(1): which Kazoo event it is, and only when some socket listens to
  the channel's account, the event's `data` rendered and serialised once, then noted as
  pending;
* every PUBLISH_INTERVAL the pending events go out: for each, the subscriptions are found by
  lookups in an index (account -> (event or *, call id or *) -> subscriptions), the frame
  for each of the (at most four) bindings that match is built once, and every socket gets
  the same bytes — server frames are not masked, so the bytes a socket writes are exactly
  the frame every other socket with that binding writes;
* the sockets' batches go out in one call of a Courier (channelsd.sendmany), which writes
  them from a native thread while the hub goes on; what a socket does not take at once, its
  own greenlet writes.

Events are Kazoo's, one per FreeSWITCH event, never merged: CHANNEL_CREATE when a channel
appears with an account (or when its account becomes known later: an event with no account
goes to nobody), CHANNEL_ANSWER, CHANNEL_HOLD, CHANNEL_UNHOLD and CHANNEL_BRIDGE as the
switch sends them (a bridge once, for the leg FreeSWITCH names, not again for its partner),
CHANNEL_DESTROY when it goes. A channel renamed by CHANNEL_UUID ends under its old call id
and begins under its new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from wsproto.frame_protocol import FrameProtocol

from channelsd import sendmany
from channelsd.blackhole.events import ON_UPDATE, render
from channelsd.blackhole.protocol import WILDCARD
from channelsd.cadence import Cadence
from channelsd.channel import Channel, kept_json
from channelsd.listing import in_slices
from channelsd.table import ChannelTable

# As the SSE streams' (channelsd.stream): at 0.05 s a crowd on one account cost ingest twice
# the sends (1,000 sockets: 0.78-0.80x of ingest without them, 0.88-0.89x at 0.1 s; the
# subscribers' lag p99 85-90 -> 136-140 ms while ingesting 5,000 events/s, BENCHMARKS.md).
PUBLISH_INTERVAL = 0.1


class Receiver(Protocol):
    """What a subscription delivers to: its socket (channelsd.sendmany.Addressee)."""

    def claim(self, data: bytes) -> int | None: ...

    def sent(self, data: bytes, n: int) -> None: ...


class Courier(Protocol):
    """What carries a publish's bytes to its sockets (channelsd.sendmany.Courier)."""

    def __call__(self, pairs: list[tuple[Receiver, bytes]]) -> None: ...

    def close(self) -> None: ...


class Subscription:
    """One (account, binding) of one socket, with what its token lets it see."""

    __slots__ = ("receiver", "account", "binding", "key", "owner", "token")

    def __init__(
        self,
        receiver: Receiver,
        account: str,
        binding: str,
        key: tuple[str, str],
        owner: str | None,
        token: Any,
    ) -> None:
        self.receiver = receiver
        self.account = account
        self.binding = binding  # as the client wrote it
        self.key = key  # (event or *, call id or *)
        # A `user` token's owner: only that owner's channels (or its devices') reach it.
        self.owner = owner
        self.token = token


class _Event:
    __slots__ = ("account", "name", "call_id", "owner", "device", "data")

    def __init__(
        self, account: str, name: str, call_id: str, owner: Any, device: Any, data: bytes
    ) -> None:
        self.account = account
        self.name = name
        self.call_id = call_id
        self.owner = owner
        self.device = device
        self.data = data


class Hub:
    """Kazoo call events from the table's change feed, fanned out to subscriptions."""

    def __init__(
        self,
        table: ChannelTable,
        interval: float = PUBLISH_INTERVAL,
        clock: Callable[[], float] = time.time,
        courier: Courier | None = None,
    ) -> None:
        self.table = table
        # A courier given is its giver's to close (the daemon's, shared with the SSE feeds).
        self._own_courier = courier is None
        self._courier: Courier = courier if courier is not None else sendmany.Courier()
        self._cadence = Cadence(interval, self._publish_pending)
        self._clock = clock
        self.closed = False
        # account (or "*") -> (event or "*", call id or "*") -> subscriptions
        self._index: dict[str, dict[tuple[str, str], dict[Subscription, None]]] = {}
        self._pending: list[_Event] = []
        # Frames only: one encoder serves every socket (server frames carry no mask).
        self._encoder = FrameProtocol(client=False, extensions=[])
        self.published = 0
        # The table calls _on_change only while someone subscribes (add/remove): an unwatched
        # hub costs the ingest path nothing.

    # -- subscriptions -----------------------------------------------------------------------

    def add(self, sub: Subscription) -> None:
        if not self._index:
            self.table.listen(self._on_change)
        self._index.setdefault(sub.account, {}).setdefault(sub.key, {})[sub] = None

    def remove(self, sub: Subscription) -> None:
        keys = self._index.get(sub.account)
        if keys is None:
            return
        subs = keys.get(sub.key)
        if subs is not None:
            subs.pop(sub, None)
            if not subs:
                del keys[sub.key]
                if not keys:
                    del self._index[sub.account]
                    if not self._index:
                        self.table.unlisten(self._on_change)

    # -- the change feed ---------------------------------------------------------------------

    def _on_change(self, kind: str, ch: Channel, info: Any) -> None:
        # The table says "create" when a channel appears, when it first gets an account and
        # when it goes on under a new uuid: each is a CHANNEL_CREATE for Kazoo. A bridge's other
        # leg is told with ("peer", name): FreeSWITCH fires one CHANNEL_BRIDGE, so does Kazoo.
        # Every change of every channel comes here while anyone subscribes, and most are of
        # accounts nobody watches: that answer comes first, in two lookups (~110 ns a call,
        # was 130-260).
        account = ch.account_id
        index = self._index
        if account is None or (account not in index and WILDCARD not in index):
            return
        if kind == "destroy":
            self._emit("CHANNEL_DESTROY", ch, account)
            return
        if kind == "create":
            self._emit("CHANNEL_CREATE", ch, account)
        if info in ON_UPDATE:
            self._emit(info, ch, account)

    def _emit(self, name: str, ch: Channel, account: str) -> None:
        """Render and note an event about `ch`, whose account someone listens to."""
        data = kept_json(render(name, ch, self._clock()))
        self._pending.append(_Event(account, name, ch.uuid, ch.owner_id, ch.authorizing_id, data))
        self._cadence.noted()

    # -- publishing --------------------------------------------------------------------------

    def publish(self) -> None:
        """Send what was noted since the last publish (its cadence calls this on time)."""
        self._cadence.run()

    def _publish_pending(self) -> None:
        pending, self._pending = self._pending, []
        batches: dict[tuple[str, tuple[str, str]], _Batch] = {}
        devices_of = self.table.identity.devices_of
        seq = 0
        # A reconcile can announce thousands at once: matched in slices, letting ingest in.
        for part in in_slices(pending):
            for event in part:
                seq += 1
                for account in (event.account, WILDCARD):
                    keys = self._index.get(account)
                    if keys:
                        self._match(seq, event, account, keys, batches, devices_of)
        self.published += len(pending)
        self._courier(self._addressed(batches))

    def _match(
        self,
        seq: int,
        event: _Event,
        account: str,
        keys: dict[tuple[str, str], dict[Subscription, None]],
        batches: dict[tuple[str, tuple[str, str]], _Batch],
        devices_of: dict[str, set[str]],
    ) -> None:
        name, call_id = event.name, event.call_id
        for key in ((name, WILDCARD), (WILDCARD, WILDCARD), (name, call_id), (WILDCARD, call_id)):
            subs = keys.get(key)
            if not subs:
                continue
            batch = batches.get((account, key))
            if batch is None:
                batch = batches[(account, key)] = _Batch(subs)
            frame = None
            if batch.everyone:
                frame = self._frame(event, account, key)
                batch.frames.append((seq, frame))
            for sub in batch.owners:  # `user` tokens: only their owner's calls
                owner = sub.owner
                if event.owner == owner or event.device in devices_of.get(owner or "", ()):
                    if frame is None:
                        frame = self._frame(event, account, key)
                    batch.owned.setdefault(sub.receiver, []).append((seq, frame))

    @staticmethod
    def _addressed(
        batches: dict[tuple[str, tuple[str, str]], _Batch],
    ) -> list[tuple[Receiver, bytes]]:
        """Each socket's bytes of the publish, in one piece. The usual case, a socket with one
        binding on an account, gets the very bytes object every other socket of that binding
        gets; a socket with several gets them merged in the order the events happened."""
        only: dict[Receiver, _Batch] = {}  # sockets with one batch so far
        several: dict[Receiver, list[list[tuple[int, bytes]]]] = {}

        def add(receiver: Receiver, frames: list[tuple[int, bytes]]) -> None:
            lists = several.get(receiver)
            if lists is not None:
                lists.append(frames)
            elif receiver in only:
                several[receiver] = [only.pop(receiver).frames, frames]
            else:
                several[receiver] = [frames]

        for batch in batches.values():
            if batch.frames:
                for sub in batch.everyone:
                    receiver = sub.receiver
                    if receiver in only or receiver in several:
                        add(receiver, batch.frames)
                    else:
                        only[receiver] = batch
            for receiver, frames in batch.owned.items():
                add(receiver, frames)
        addressed = [(receiver, batch.blob()) for receiver, batch in only.items()]
        for receiver, lists in several.items():
            merged = [item for frames in lists for item in frames]
            merged.sort(key=_first)  # stable: the order the events happened in
            addressed.append((receiver, b"".join(frame for _, frame in merged)))
        return addressed

    def _frame(self, event: _Event, account: str, key: tuple[str, str]) -> bytes:
        message = (
            b'{"action":"event","subscribed_key":'
            + orjson.dumps(f"call.{key[0]}.{key[1]}")  # the binding, as the client wrote it
            + b',"subscription_key":'
            + orjson.dumps(f"call.{account}.{key[0]}.{key[1]}")
            + b',"name":'
            + orjson.dumps(event.name)
            + b',"routing_key":'
            + orjson.dumps(f"call.{event.account}.{event.name}.{event.call_id}")
            + b',"data":'
            + event.data
            + b"}"
        )
        return bytes(self._encoder.send_data(message.decode("utf-8")))

    def text_frame(self, message: bytes) -> bytes:
        """A reply or any other JSON message as a websocket text frame."""
        return bytes(self._encoder.send_data(message.decode("utf-8")))

    def close(self) -> None:
        self.closed = True
        self._cadence.close()
        if self._own_courier:
            self._courier.close()


class _Batch:
    """One publish's frames for one (account, binding): shared by every socket holding it."""

    __slots__ = ("everyone", "owners", "frames", "owned", "_blob")

    def __init__(self, subs: dict[Subscription, None]) -> None:
        self.everyone = [s for s in subs if s.owner is None]
        self.owners = [s for s in subs if s.owner is not None]
        self.frames: list[tuple[int, bytes]] = []  # (event's order in the publish, frame)
        self.owned: dict[Receiver, list[tuple[int, bytes]]] = {}
        self._blob: bytes | None = None

    def blob(self) -> bytes:
        if self._blob is None:
            self._blob = b"".join(frame for _, frame in self.frames)
        return self._blob


def _first(item: tuple[int, bytes]) -> int:
    return item[0]
