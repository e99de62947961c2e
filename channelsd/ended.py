"""Calls that just ended: what the operator's "recently ended" view lists (issue #15).

A channel that hung up (its table row carries an Ending) is kept here for `keep_seconds` after
its destroy, at most `max_calls` of them: what makes the item it last had in the lists plus
how it ended. Each call is one bytes record (channelsd.endedrecord: its time, its account, and what
its item is made of, compressed), ~370 B for a Kazoo call: nothing of the channel object is
kept, and 10,000 calls stay in CPython's small-object arenas instead of pinning pages of
glibc's heap.

A record keeps the channel's fields, not its item: the item (a dict of ~45 keys, then its
JSON) is made when a listing reads the call. Made at every hang-up, on the ingest path, it
cost ~4 µs of the ~8 a record took (issue #16), for calls most of which are never listed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Container, Iterator
from operator import attrgetter
from typing import Any

import orjson

from channelsd import endedrecord
from channelsd.channel import GREGORIAN_OFFSET, OPTIONAL_ITEM_KEYS, Channel, Ending, kept_json
from channelsd.listing import pace

# The channel's fields its ended item is made of (ended_item), in a record's order, and its
# ending's. (tests/test_ended_record.py: a channel whose every field is set gives the same
# item through its record, so a field the item comes to read is a field kept here.) Of its
# recordings the item says only whether there were any (is_recording): a record keeps that,
# not the paths (a switch that never sends RECORD_STOP would make them its bulk).
KEPT = (
    "uuid",
    "node",
    "name",
    "created_us",
    "answered",
    "is_onhold",
    "is_loopback",
    "details",
    "bridge_id",
    "ccvs",
    *OPTIONAL_ITEM_KEYS,
)
KEPT_ENDING = ("cause", "disposition", "duration", "billsec", "mos", "hangup_us", "complete")
_kept, _kept_ending = attrgetter(*KEPT), attrgetter(*KEPT_ENDING)
_OWNER, _DEVICE = KEPT.index("owner_id"), KEPT.index("authorizing_id")
_RECORDING = ("",)  # a restored channel's stand-in for "was recording"


def record_of(ch: Channel, at: float) -> bytes:
    """The record of a channel that ended at `at`: its fields as it had them then."""
    ending = ch.ending
    kept = (
        _kept(ch),
        bool(ch.recordings),
        None if ending is None else _kept_ending(ending),
    )
    return endedrecord.pack(at, ch.account_id, orjson.dumps(kept))


def ended_item(ch: Channel, at: float) -> dict[str, Any]:
    """The item of a channel that ended at `at`: its list item, its details (the Call-ID,
    codec, far end: what a look at a bad call starts from) and how it ended."""
    item = ch.fixed_item()
    if ch.details:
        item.update(ch.details)
    item.update(ch.end_item(at))
    item["ended_timestamp"] = int(at) + GREGORIAN_OFFSET
    return item


def _restored(kept: list[Any], recording: bool, ending: list[Any] | None) -> Channel:
    """The channel a record kept, with the fields ended_item() reads."""
    ch = Channel(kept[1], kept[0])
    for name, value in zip(KEPT, kept, strict=True):
        setattr(ch, name, value)
    ch.recordings = _RECORDING if recording else ()
    if ending is not None:
        ch.ending = Ending()
        for name, value in zip(KEPT_ENDING, ending, strict=True):
            setattr(ch.ending, name, value)
    return ch


class Ended:
    """One ended call as a listing reads it: a view of its record, made when selected, that
    decodes the account and makes the item's JSON once however often they are read. The
    owner and device ids are the channel's (`owner_id`, `authorizing_id`) when it ended:
    read from the record once, and only they are kept. A listing holds the calls it answers
    with until it is written (thousands, and their items' dicts would be as many objects for
    the collector to walk and a stall to free: channelsd.listing), so the item is made for
    each caller that asks for it as a dict, and held by none."""

    __slots__ = ("record", "_account", "_start", "_item", "_owner", "_device", "_scoped")

    def __init__(self, record: bytes) -> None:
        self.record = record
        self._start = 0
        self._account: str | None = None
        self._item: bytes | None = None
        self._owner: str | None = None
        self._device: str | None = None
        self._scoped = False

    @property
    def at(self) -> float:
        return endedrecord.at(self.record)

    @property
    def account_id(self) -> str | None:
        self._read_head()
        return self._account

    def _read_head(self) -> int:
        """The account and where the item starts, read once (an item starts past the head)."""
        if not self._start:
            self._account, self._start = endedrecord.account(self.record)
        return self._start

    @property
    def owner_id(self) -> str | None:
        if not self._scoped:
            self._scope()
        return self._owner

    @property
    def device_id(self) -> str | None:
        if not self._scoped:
            self._scope()
        return self._device

    def _scope(self) -> None:
        kept = self._kept()[0]
        self._owner, self._device = kept[_OWNER], kept[_DEVICE]
        self._scoped = True

    def _kept(self) -> list[Any]:
        """The record's fields, decoded anew (see the class)."""
        return orjson.loads(endedrecord.payload(self.record, self._read_head()))  # type: ignore[no-any-return]

    @property
    def item(self) -> bytes:
        """The item as JSON (a copy of its own size: a listing holds thousands of them until
        they are joined, and orjson's own result holds the buffer it grew, ~13 times more)."""
        if self._item is None:
            self._item = kept_json(self.as_dict())
        return self._item

    def as_dict(self) -> dict[str, Any]:
        """The item, a dict of the caller's own (nested objects included)."""
        if self._item is not None:
            return orjson.loads(self._item)  # type: ignore[no-any-return]
        return ended_item(_restored(*self._kept()), self.at)


class EndedCalls:
    """The last minutes of ended calls, oldest first; fed by the table's destroy notices."""

    def __init__(
        self,
        keep_seconds: float = 900.0,
        max_calls: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keep_seconds = keep_seconds
        self.max_calls = max_calls
        self._clock = clock
        self._calls: deque[bytes] = deque()

    def __len__(self) -> int:
        self._expire()
        return len(self._calls)

    def on_change(self, kind: str, ch: Channel, _info: Any) -> None:
        """The table's listener: a destroyed channel that hung up is kept."""
        if kind != "destroy" or ch.ending is None:
            return
        self._calls.append(record_of(ch, self._clock()))
        while len(self._calls) > self.max_calls:
            self._calls.popleft()
        self._expire()

    def _expire(self) -> None:
        horizon = self._clock() - self.keep_seconds
        calls = self._calls
        while calls and endedrecord.at(calls[0]) < horizon:
            calls.popleft()

    def select(
        self,
        account_id: str | None = None,
        owner_id: str | None = None,
        devices: Container[str] = (),
        device_id: str | None = None,
    ) -> Iterator[Ended]:
        """Newest first, narrowed as the live lists are: the system (no argument), an account,
        a user (its owner id, or one of its devices) or a device.

        A user's or a device's calls are found by decompressing each of the account's (up to
        `max_calls`, ~5 µs each): paced like every loop of a list answer (channelsd.listing)."""
        self._expire()
        account = None if account_id is None else endedrecord.encoded(account_id)
        narrowed = owner_id is not None or device_id is not None
        # paced, the hub runs between two calls: a copy (unpaced, read through at once)
        calls = list(self._calls) if narrowed else self._calls
        for record in reversed(calls):
            if account is not None and not endedrecord.of_account(record, account):
                continue
            call = Ended(record)
            if narrowed:
                pace()
            if owner_id is not None and not (
                call.owner_id == owner_id or call.device_id in devices
            ):
                continue
            if device_id is not None and call.device_id != device_id:
                continue
            yield call
