"""The live channel table: plain data with indices, fed by FreeSWITCH channel events.

Nothing here knows about sockets or HTTP, so the table can be tested and benchmarked alone.
Rows are keyed by (node, uuid). The rules below are forced by what a real switch sends (see
tests/fixtures/captures/README.md):

* any channel event upserts, because the first event of a leg is CHANNEL_UUID or
  CHANNEL_STATE, not CHANNEL_CREATE;
* CHANNEL_DESTROY removes the row and leaves a tombstone, because a CHANNEL_STATE(CS_DESTROY)
  follows it and would otherwise bring the channel back;
* CHANNEL_STATE / CHANNEL_CALLSTATE carry no variable_* headers, so a header that is absent
  never erases what an earlier event said;
* CHANNEL_BRIDGE / CHANNEL_UNBRIDGE fire once, on one leg only, naming both legs.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Callable, Iterable
from sys import intern
from typing import Any

from channelsd.channel import (
    DETAIL_CHAINS,
    ENDING_HEADERS,
    FRESH_TAIL,
    MAX_VALUE_CHARS,
    NUMERIC_DETAILS,
    PERSONAL_DETAILS,
    SECURE_MEDIA,
    STALE_TAIL,
    Channel,
    Ending,
    usable,
)
from channelsd.config import DEFAULT_CCV_PREFIX, DEFAULT_IDENTITY
from channelsd.fields import A_UUID, SHARED, loops
from channelsd.validate import is_uuid, whole_number

log = logging.getLogger("channelsd.table")

Key = tuple[str, str]
Event = dict[str, Any]
Listener = Callable[[str, Channel, Any], None]

IDENTITY_FIELDS = (
    "account_id",
    "owner_id",
    "authorizing_id",
    "authorizing_type",
    "username",
    "realm",
    "bridge_id",
)
_CALLER_NAME = (
    "variable_origination_caller_id_name",
    "variable_effective_caller_id_name",
    "Caller-Caller-ID-Name",
)
_CALLER_NUMBER = (
    "variable_origination_caller_id_number",
    "variable_effective_caller_id_number",
    "Caller-Caller-ID-Number",
)
_CALLEE_NAME = (
    "variable_origination_callee_id_name",
    "variable_effective_callee_id_name",
    "Caller-Callee-ID-Name",
    "Other-Leg-Caller-ID-Name",
)
_CALLEE_NUMBER = (
    "variable_origination_callee_id_number",
    "variable_effective_callee_id_number",
    "Caller-Callee-ID-Number",
    "Other-Leg-Caller-ID-Number",
)
_PRESENCE = ("variable_presence_id", "Channel-Presence-ID")
_INTERACTION = ("variable_ecallmgr_Call-Interaction-ID", "variable_Call-Interaction-ID")
# Fields read as "the first of these headers present"; identity chains come from the config.
_FIXED_CHAINS = (
    ("direction", ("Call-Direction",)),
    ("destination", ("Caller-Destination-Number",)),
    ("state", ("Channel-State",)),
    ("call_state", ("Channel-Call-State",)),
    ("loopback_other_leg", ("variable_other_loopback_leg_uuid",)),
    ("presence_id", _PRESENCE),
    ("caller_id_name", _CALLER_NAME),
    ("caller_id_number", _CALLER_NUMBER),
    ("callee_id_name", _CALLEE_NAME),
    ("callee_id_number", _CALLEE_NUMBER),
    ("interaction_id", _INTERACTION),
)

# Fields whose values many channels share: interned when they change, so that 100,000
# channels of 100 accounts hold 100 account ids, not 100,000 copies.
_SHARED_FIELDS = frozenset(
    ("direction", "state", "call_state", "account_id", "realm", "authorizing_type")
)


def _with_modes(
    chains: tuple[tuple[str, tuple[str, ...]], ...],
    shared_headers: frozenset[str] = frozenset(),
) -> tuple[tuple[str, tuple[str, ...], str | None], ...]:
    """Chains as (field, headers, how a new value is kept), for the ingest loop. A field read
    from a custom channel variable whose values the ccvs dict interns (`shared_headers`, see
    _ccvs) is interned too, so that the channel holds one string for both: 100,000 Kazoo
    channels held a second copy of their owner id, device id and username (~210 B each)."""
    return tuple(
        (
            attr,
            chain,
            A_UUID
            if attr in _UUID_FIELDS
            else SHARED
            if attr in _SHARED_FIELDS or not shared_headers.isdisjoint(chain)
            else None,
        )
        for attr, chain in chains
    )


_UUID_FIELDS = frozenset(("loopback_other_leg",))

# Kazoo custom channel variables with one value per account or per kind of call.
_SHARED_KAZOO_CCVS = ("Reseller-ID", "Application-Name", "Channel-Authorized", "Account-Name")
# Custom variable names remembered (header -> name); past this, a switch inventing names is
# not remembered.
_CCV_NAMES_MAX = 4096
# ... and only names this short (Kazoo's are a few dozen characters): the count alone let a
# switch keep 4096 names of up to an event's size each, twice (header and name), for good.
_CCV_NAME_KEPT_CHARS = 64
# Distinct shared details dicts remembered (codec and application combinations).
_SHARED_DETAILS_MAX = 1024
# Recordings a channel is known to run at once: a call records once or twice (a caller's and
# a supervisor's); past this a RECORD_START is refused, as a switch sending new paths without
# a RECORD_STOP would otherwise grow one row without bound (each change copies the tuple).
MAX_RECORDINGS = 16
# ... and only those whose texts are this short: a caller's 2 KB User-Agent is its own call's,
# not a combination worth keeping after the call (1024 of them held ~14 MB for good).
_SHARED_DETAIL_CHARS = 128
_FIXED_WITH_MODES = _with_modes(_FIXED_CHAINS)
# DETAIL_CHAINS flattened for the ingest loop: (key, header, a number?); all of them, and
# those of any endpoint for loopback legs.
_RTP_DETAILS = tuple(
    (key, header, key in NUMERIC_DETAILS) for key, chain in DETAIL_CHAINS for header in chain
)
_CORE_DETAILS = tuple(
    d for d in _RTP_DETAILS if not d[1].startswith(("variable_sip", "variable_remote_media"))
)

_ENDING_EVENTS = frozenset(("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"))

# State changes without the channel's variables: a known channel's take a short path.
_STATE_EVENTS = frozenset(("CHANNEL_STATE", "CHANNEL_CALLSTATE"))
_STATE_CHAINS = _with_modes(
    (
        ("state", ("Channel-State",)),
        ("call_state", ("Channel-Call-State",)),
        ("destination", ("Caller-Destination-Number",)),
    )
)

# Events about one channel whose names do not start with CHANNEL_.
_OTHER_CHANNEL_EVENTS = frozenset(("CALL_UPDATE", "RECORD_START", "RECORD_STOP"))


# The events apply() acts on (a channel's events and API), named by this prefix or in this set:
# those may come with only headers_read picked out of them (channelsd/eventpick.py).
TABLE_EVENT_PREFIX = "CHANNEL_"
TABLE_EVENT_NAMES = _OTHER_CHANNEL_EVENTS | {"API"}


def _listener_failed(listener: Listener, what: Any) -> None:
    """A listener failed on a change (from an except block: with its traceback). The table
    has the change already, and the listeners after this one are still told: one feed's bug
    must not cost another feed its change (the streams, the ended-calls store, an action
    waiting for its channel to settle). (try costs nothing in 3.11 until something raises:
    the listeners' loops stay as they were on the ingest path.)"""
    log.exception("listener %s failed on %s", getattr(listener, "__qualname__", listener), what)


def table_event(name: Any) -> bool:
    """Whether apply() acts on events of this name (see TABLE_EVENT_PREFIX)."""
    return name.__class__ is str and (
        name.startswith(TABLE_EVENT_PREFIX) or name in TABLE_EVENT_NAMES
    )


# FreeSWITCH adds no variable_* headers to these (freeswitch-esl.md §2.3): skip the variable
# lookups for them, about a third of all channel events.
_NO_VARIABLES = frozenset(
    ("CHANNEL_STATE", "CHANNEL_CALLSTATE", "CHANNEL_OUTGOING", "CHANNEL_APPLICATION")
)

# Every header apply() reads besides the chains and the custom channel variables (the details'
# headers are here). Only these are picked out of a json event (channelsd/eventpick.py): a
# header read and not named here is missed; tests/test_eventpick.py records every header
# apply() asks for.
_OTHER_HEADERS = (
    "Event-Name",
    "Unique-ID",
    "Old-Unique-ID",
    "Other-Leg-Unique-ID",
    "Channel-Name",
    "Answer-State",
    "Caller-Channel-Created-Time",
    "variable_loopback_leg",
    "variable_uuid",
    "Bridge-A-Unique-ID",
    "Bridge-B-Unique-ID",
    "Record-File-Path",
    "API-Command",
    "API-Command-Argument",
    *ENDING_HEADERS,
    *(header for _, header in SECURE_MEDIA),
    *(header for _, header, _ in _RTP_DETAILS),
)

# Channels whose list JSON is kept at most: ~26 MB of Kazoo channels.
JSON_CACHE_MAX = 20_000
# Destroyed uuids remembered at most, whatever their age: a burst of hang-ups cannot grow the
# tombstones without bound (~330 B each).
TOMBSTONES_MAX = 200_000
# A tombstone table that held at least this many is copied once it holds a quarter of its
# peak (see _prune_tombstones).
TOMBSTONES_COMPACT_FROM = 1024

# The state after which a leg is gone for good (compared with ==: a hostile switch's value
# may be a list, which a set's `in` would raise on).
_FINAL_STATE = "CS_DESTROY"


def _final(state: Any) -> bool:
    """Whether a Channel-State value says the leg is gone, read as the fields read it (a
    list's first value names it: see usable())."""
    return state == _FINAL_STATE or (state.__class__ is list and usable(state) == _FINAL_STATE)


# The events a channel starts with: FreeSWITCH fires CHANNEL_CREATE first for every session,
# and a reconcile hydrates from a dump. Only these are asked whether they start a new channel
# under a hung-up row's uuid (a creation time read for every event of a hung-up row was ~3 %
# of the ingest's instructions: a hang-up is followed by a dozen events).
_STARTING_EVENTS = frozenset(("CHANNEL_CREATE", "CHANNEL_DATA"))


def _reused(ch: Channel, event: Event) -> bool:
    """Whether `event` is of a channel created after `ch` under the same uuid."""
    created = whole_number(event.get("Caller-Channel-Created-Time"))
    return ch.created_known and created is not None and created > ch.created_us


class Identity:
    """Which event headers give account, owner, device, … (spec §2 identity mapping)."""

    def __init__(
        self,
        chains: dict[str, Iterable[str]] | None = None,
        ccv_prefix: str = DEFAULT_CCV_PREFIX,
        device_owners: dict[str, str] | None = None,
    ) -> None:
        merged = {k: tuple(v) for k, v in DEFAULT_IDENTITY.items()}
        merged.update({k: tuple(v) for k, v in (chains or {}).items()})
        self.chains: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
            (f, merged[f]) for f in IDENTITY_FIELDS
        )
        self.ccv_prefix = ccv_prefix
        self.device_owners = dict(device_owners or {})
        self.devices_of: dict[str, set[str]] = {}
        for device, owner in self.device_owners.items():
            self.devices_of.setdefault(owner, set()).add(device)
        self.headers = frozenset(h for _, chain in self.chains for h in chain)


class Scope(dict[Key, Channel]):
    """The channels of one list (all, an account, an owner, a device) by key, their list
    order once asked for, and a generation that every change to the list's answer bumps:
    a member joining, leaving or changing, or its node going stale.

    The order, once sorted, is kept in step with the members (a binary search and a move of
    pointers for each): sorting 10,000 channels again took 16-28 ms of the hub for every
    system list asked while calls came and went. A burst of changes nobody lists between (a
    reconcile, a restart's thousands) drops it instead: it is sorted once when next asked,
    not grown and moved one insertion at a time. So does any change to a list shorter than
    KEEP_ORDER_FROM, which sorts in well under a millisecond: kept, the orders of every
    account, user and device list asked cost 8 bytes per channel each (the memory target
    is 2 KiB a channel)."""

    __slots__ = ("order", "gen", "_moves")

    def __init__(self) -> None:
        super().__init__()
        self.order: list[Channel] | None = None
        self.gen = 0
        self._moves = 0  # changes to the kept order since it was last asked for

    def add(self, key: Key, ch: Channel) -> None:
        old = self.get(key)
        if old is not ch:
            self[key] = ch
            self.gen += 1
            if self.order is not None:
                if old is not None:
                    self._drop(old, old.sort_key())
                self.place(ch)

    def discard(self, key: Key) -> Channel | None:
        ch = self.pop(key, None)
        if ch is not None:
            self.gen += 1
            if self.order is not None:
                self._drop(ch, ch.sort_key())
        return ch

    def unplace(self, ch: Channel) -> bool:
        """Take a member out of the kept order before its sort key changes; place() puts it
        back. False when there is no order to keep (or the channel is not a member)."""
        if self.order is None or self.get(ch.key) is not ch:
            return False
        self._drop(ch, ch.sort_key())
        return self.order is not None

    def place(self, ch: Channel) -> None:
        if self._still_kept():
            insort(self.order, ch, key=Channel.sort_key)  # type: ignore[arg-type]

    def _still_kept(self) -> bool:
        """Whether the order is worth one more change (counted), or is dropped instead."""
        if self.order is None:
            return False
        self._moves += 1
        if self._moves > (len(self) >> 2) + 64 or len(self) < KEEP_ORDER_FROM:
            self.order = None
            return False
        return True

    def _drop(self, ch: Channel, at: tuple[int, str, str]) -> None:
        if not self._still_kept():
            return
        order = self.order
        assert order is not None
        i = bisect_left(order, at, key=Channel.sort_key)
        if i < len(order) and order[i] is ch:
            del order[i]
        else:  # not where its key says: sorted afresh when next asked
            self.order = None

    def ordered(self) -> list[Channel]:
        """Oldest first, then by uuid (and node: one uuid on two nodes)."""
        if self.order is None:
            self.order = sorted(self.values(), key=Channel.sort_key)
        self._moves = 0
        return list(self.order)


# Lists shorter than this are sorted again after a change rather than kept in order.
KEEP_ORDER_FROM = 1024

EMPTY_SCOPE = Scope()  # what a list of nobody's channels reads; never added to


def _scope(index: dict[Any, Scope], ikey: Any) -> Scope:
    found = index.get(ikey)
    if found is None:
        found = index[ikey] = Scope()
    return found


class ChannelTable:
    """All live channels of all nodes, with indices for the API's scoped reads."""

    def __init__(
        self,
        identity: Identity | None = None,
        tombstone_ttl: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        tombstones_max: int = TOMBSTONES_MAX,
        compiled: bool = True,
    ) -> None:
        self.set_identity(identity or Identity())
        self.tombstone_ttl = tombstone_ttl
        self.tombstones_max = tombstones_max
        self._clock = clock
        # The loops over an event's headers (channelsd/fields.py): C when built; `compiled`
        # False is for the tests that hold the two equal.
        self._merge_fields, self._pick_details = loops(compiled)
        self._rows = Scope()
        # uuid -> its row. The same uuid on two nodes is rare (origination_uuid chosen by a
        # dialplan, a restored switch): the first row is here, the others in _twins.
        self._by_uuid: dict[str, Channel] = {}
        self._twins: dict[str, list[Channel]] = {}
        self._by_account: dict[str, Scope] = {}
        self._by_owner: dict[tuple[str, str], Scope] = {}
        self._by_device: dict[tuple[str, str], Scope] = {}
        self._node_counts: dict[str, int] = {}
        # key -> (expiry, creation time of the channel destroyed): a later channel that reuses
        # the uuid (a retried originate with the same origination_uuid) is created after it.
        self._tombstones: OrderedDict[Key, tuple[float, int]] = OrderedDict()
        self._tombstones_peak = 0
        # Live channels whose list JSON is kept, least recently built first (see items_json).
        self._json_kept: OrderedDict[Key, Channel] = OrderedDict()
        self.json_cache_max = JSON_CACHE_MAX
        # node -> when its connection dropped; its channels not heard of since are stale.
        self._stale_since: dict[str, float] = {}
        # Values from the switch refused, by the field they were meant for (bounded: field
        # names are ours, never the switch's).
        self.refused: dict[str, int] = {}
        # Called with (kind, channel, info) after changes (see listen()): the live event
        # streams on every change, the ended-calls store and actions on destroys only.
        self._on_change: tuple[Listener, ...] = ()
        self._on_destroy: tuple[Listener, ...] = ()
        self._on_named: dict[str, tuple[Listener, ...]] = {}

    def listen(
        self, callback: Listener, destroys_only: bool = False, names: Iterable[str] = ()
    ) -> None:
        """Call `callback(kind, channel, info)` after every change ("create", "update" with the
        FreeSWITCH event name or why as info, "destroy"); or only after destroys, and updates
        by the events `names`: a listener that needs no more costs the ingest path nothing.
        A callback already listening is not added twice."""
        if callback in self._on_destroy:
            return
        if not destroys_only:
            self._on_change += (callback,)
        for name in names:
            self._on_named[name] = (*self._on_named.get(name, ()), callback)
        self._on_destroy += (callback,)

    def unlisten(self, callback: Listener) -> None:
        """Stop calling `callback`: a feed nobody subscribes to (the event streams, the
        websocket) leaves the ingest path until someone does, instead of being called on
        every change only to return. (Safe from inside a listener: the loops calling them
        hold the tuple they started with.)"""
        self._on_change = tuple(c for c in self._on_change if c != callback)
        self._on_destroy = tuple(c for c in self._on_destroy if c != callback)
        named = {}
        for name, listeners in self._on_named.items():
            kept = tuple(c for c in listeners if c != callback)
            if kept:
                named[name] = kept
        self._on_named = named

    def _notify(self, kind: str, ch: Channel, info: Any) -> None:
        for listener in self._on_destroy if kind == "destroy" else self._on_change:
            try:
                listener(kind, ch, info)
            except Exception:
                _listener_failed(listener, kind)

    # -- reads -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, uuid: str) -> Channel | None:
        return self._by_uuid.get(uuid)

    def with_uuid(self, uuid: str) -> list[Channel]:
        """Every row of this uuid, whatever its node (usually one)."""
        first = self._by_uuid.get(uuid)
        if first is None:
            return []
        return [first, *self._twins.get(uuid, ())]

    def row(self, node: str, uuid: str) -> Channel | None:
        return self._rows.get((node, uuid))

    def node_uuids(self, node: str) -> set[str]:
        return {uuid for (n, uuid) in self._rows if n == node}

    def node_rows(self, node: str) -> list[Channel]:
        """A node's channels. A walk over every row: reconciles and stale changes ask, not
        reads, and a per-node index would cost every channel a dict entry more."""
        return [ch for ch in self._rows.values() if ch.node == node]

    def count(self, node: str) -> int:
        return self._node_counts.get(node, 0)

    def account_count(self) -> int:
        return len(self._by_account)

    def tombstone_count(self) -> int:
        self.expire_tombstones()
        return len(self._tombstones)

    def expire_tombstones(self) -> None:
        """Forget the tombstones whose time is up. A destroy prunes them too, but after the
        last call of a busy hour no destroy comes: the daemon's tick calls this, so that they
        do not outlive their TTL (~330 B each, up to tombstones_max of them)."""
        self._prune_tombstones(self._clock())

    def set_identity(self, identity: Identity) -> None:
        """A new identity mapping (SIGHUP); it applies from the next event of each channel."""
        self.identity = identity
        # FreeSWITCH writes header names unescaped in both event forms, so a body without
        # these bytes has no custom channel variables (a prefix JSON would escape: no hint).
        prefix = identity.ccv_prefix
        plain = prefix.isprintable() and '"' not in prefix and "\\" not in prefix
        self._ccv_probe = prefix.encode() if plain and prefix else None
        # ... and then none of the identity headers that are custom channel variables.
        # Custom variables whose values many channels share: those the identity reads, and
        # Kazoo's per-account ones. Their values are interned (see _ccvs).
        self._shared_ccvs = frozenset(
            [
                h[len(prefix) :]
                for _, chain in identity.chains
                for h in chain
                if h.startswith(prefix)
            ]
            + list(_SHARED_KAZOO_CCVS)
        )
        shared_headers = frozenset(prefix + name for name in self._shared_ccvs)
        self._chains = _with_modes(_FIXED_CHAINS + identity.chains, shared_headers)
        # What apply() reads of an event: these headers, and those starting with the prefix.
        self.headers_read = frozenset(
            _OTHER_HEADERS + tuple(h for _, chain, _ in self._chains for h in chain)
        )
        self._ccv_names: dict[str, str] = {}
        self._shared_details: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._chains_without_ccvs = tuple(
            (attr, kept, mode)
            for attr, chain, mode in self._chains
            if (kept := tuple(h for h in chain if not (prefix and h.startswith(prefix))))
        )

    # Lists are in the API's order (oldest first, then uuid); a Scope keeps that order once
    # computed, until the set changes: sorting by a Python key is most of a short list's cost.

    def all(self) -> list[Channel]:
        return self._rows.ordered()

    def by_account(self, account_id: str) -> list[Channel]:
        return self.account_scope(account_id).ordered()

    def by_device(self, account_id: str, device_id: str) -> list[Channel]:
        return self.device_scope(account_id, device_id).ordered()

    def all_scope(self) -> Scope:
        return self._rows

    def account_scope(self, account_id: str) -> Scope:
        return self._by_account.get(account_id) or EMPTY_SCOPE

    def device_scope(self, account_id: str, device_id: str) -> Scope:
        return self._by_device.get((account_id, device_id)) or EMPTY_SCOPE

    def by_user(self, account_id: str, user_id: str) -> list[Channel]:
        """Channels owned by the user, or authorised by one of the user's known devices."""
        found = dict(self._by_owner.get((account_id, user_id), {}))
        for device in self.identity.devices_of.get(user_id, ()):
            found.update(self._by_device.get((account_id, device), {}))
        return sorted(found.values(), key=Channel.sort_key)

    def items_json(self, channels: list[Channel], now: float) -> list[bytes]:
        """Each channel's list item as JSON (to_item()), spliced from its cached base: the
        body of a list."""
        kept = self._json_kept
        for ch in channels:
            if ch.cached is None:
                ch.cached = ch.json_base()
                key = ch.key
                if self._rows.get(key) is ch:  # not one removed while the list was built
                    kept[key] = ch
                    kept.move_to_end(key)
        any_stale = bool(self._stale_since)  # no node down: nothing to look up per channel
        parts = [
            ch.cached
            + (STALE_TAIL if any_stale and self.is_stale(ch) else FRESH_TAIL) % ch.elapsed(now)
            for ch in channels
        ]
        # A Kazoo channel's base is ~1.3 KB: kept for the most recently built ones only, so
        # that memory stays bounded however many have been listed. Only live channels are
        # kept: removing a row forgets its entry (_forget).
        while len(kept) > self.json_cache_max:
            kept.popitem(last=False)[1].cached = None
        return parts

    def is_stale(self, ch: Channel) -> bool:
        since = self._stale_since.get(ch.node)
        return since is not None and ch.last_seen <= since

    def is_node_stale(self, node: str) -> bool:
        return node in self._stale_since

    def is_tombstoned(self, node: str, uuid: str, created_us: int | None = None) -> bool:
        """Destroyed lately: its late events must not bring it back. A channel created after
        the destroyed one (`created_us`) is another channel reusing the uuid, not a late event."""
        key = (node, uuid)
        tomb = self._tombstones.get(key)
        if tomb is None or tomb[0] <= self._clock():
            return False
        if created_us is not None and created_us > tomb[1]:
            return False
        # Not newer: a late event of the destroyed one, unless it is of the row now under the
        # uuid (a live call renamed onto it, created before the destroyed one).
        live = self._rows.get(key)
        return live is None or not live.created_known or live.created_us != created_us

    def problems(self) -> list[str]:
        """Where the indices disagree with the rows (empty when the table is sound): what the
        tests assert after every step, and what an operator's debug dump could show."""
        found: list[str] = []
        rows = dict(self._rows)
        for key, ch in rows.items():
            if key != (ch.node, ch.uuid):
                found.append(f"row {key} holds {(ch.node, ch.uuid)}")
        counts: dict[str, int] = {}
        for ch in rows.values():
            counts[ch.node] = counts.get(ch.node, 0) + 1
        if counts != self._node_counts:
            found.append("the per-node counts differ from the rows")
        for key, ch in rows.items():
            if ch.key != key:
                found.append(f"row {key} has the key {ch.key}")
        by_uuid: dict[str, list[Channel]] = {}
        for ch in rows.values():
            by_uuid.setdefault(ch.uuid, []).append(ch)
        for uuid, chans in by_uuid.items():
            if sorted(map(id, self.with_uuid(uuid))) != sorted(map(id, chans)):
                found.append(f"uuid lookup of {uuid} differs from its rows")
        if set(self._by_uuid) != set(by_uuid) or not set(self._twins) <= set(by_uuid):
            found.append("the uuid index holds uuids without rows")
        for name, index, keyf in (
            ("account", self._by_account, lambda c: c.account_id),
            ("owner", self._by_owner, lambda c: (c.account_id, c.owner_id)),
            ("device", self._by_device, lambda c: (c.account_id, c.authorizing_id)),
        ):
            want: dict[Any, dict[Key, Channel]] = {}
            for key, ch in rows.items():
                ikey = keyf(ch)
                if ch.account_id is not None and None not in (ikey if name != "account" else ()):
                    want.setdefault(ikey, {})[key] = ch
            have = {k: dict(v) for k, v in index.items()}
            if have != want:
                found.append(f"the {name} index differs from the rows")
        for scope in (
            self._rows,
            *self._by_account.values(),
            *self._by_owner.values(),
            *self._by_device.values(),
        ):
            if scope.order is not None and scope.order != sorted(
                scope.values(), key=Channel.sort_key
            ):
                found.append("a kept list order differs from its members sorted")
        for key, ch in self._json_kept.items():
            if rows.get(key) is not ch:
                found.append(f"the JSON cache keeps {key}, which is not a live row")
        return found

    # -- writes ------------------------------------------------------------------------------

    def apply(self, node: str, event: Event, raw: bytes | None = None) -> None:
        """Fold one FreeSWITCH event into the table, whole or not at all.

        `raw`, the text the event was parsed from (or, for a picked event, b"" when none of
        its headers has the prefix and None when one has: eventpick.TableReader.cut), is only
        a hint: an event whose text lacks the custom channel variables' prefix is not scanned
        for them (one byte search instead of a look at each of its ~150 headers). Values the
        switch should never send (objects, numbers, absurd lengths, a Unique-ID that is not a
        uuid) are refused and counted in `refused`; nothing below raises on them."""
        name = event.get("Event-Name")
        if name.__class__ is not str:
            return
        if name in _STATE_EVENTS:
            # Half of all events: a known channel's state or call state moved on. What else
            # such an event could change (ids, identity) comes with events that carry the
            # channel's variables, so only the states, the destination (a transfer routes
            # anew) and the answer are read here.
            uuid = event.get("Unique-ID")
            ch = self._rows.get((node, uuid)) if uuid.__class__ is str else None
            if ch is not None and self._moved_on(ch, event):
                return
        if name == "API":
            self._apply_api(node, event)
            return
        if not (name.startswith("CHANNEL_") or name in _OTHER_CHANNEL_EVENTS):
            return
        uuid = event.get("Unique-ID")
        if uuid.__class__ is not str or not uuid:
            self._refuse("uuid")
            return
        renamed = False
        if name == "CHANNEL_UUID":
            old = event.get("Old-Unique-ID")
            if old.__class__ is str and old != uuid and is_uuid(uuid):
                renamed = self._rename(node, old, uuid)
        key = (node, uuid)
        if key in self._tombstones:  # (`in`, not get(): most events meet none)
            created = whole_number(event.get("Caller-Channel-Created-Time"))
            if self.is_tombstoned(node, uuid, created or None):
                return  # a late event of the channel destroyed
            if self._tombstones[key][0] <= self._clock():
                del self._tombstones[key]
            # Otherwise a new channel under the same uuid (a dialplan's origination_uuid), or
            # the row now under it: the tombstone stays for the old one's late events until it
            # expires. Its DESTROY (FreeSWITCH frees the uuid before it fires it) or
            # HANGUP_COMPLETE, heard after the new call's events, would end the live call.
        ch = self._rows.get(key)
        if (
            ch is not None
            and ch.ending is not None
            and name in _STARTING_EVENTS
            and _reused(ch, event)
        ):
            # A new channel under a hung-up one's uuid whose DESTROY was lost: that one is
            # gone (tombstoned, as above), and its ending must not stay on the new call (a
            # reconcile's "gone" would hide it, actions would refuse it).
            self.remove(node, uuid)
            ch = None
        # Checked once, when the uuid would become a row: a uuid reaches ESL command lines.
        if ch is None and not is_uuid(uuid):
            self._refuse("uuid")
            return
        if name == "CHANNEL_DESTROY" or _final(event.get("Channel-State")):
            if ch is not None and (ch.ending is None or not ch.ending.complete):
                self._ending(ch).merge(event)  # HANGUP_COMPLETE was lost
            self.remove(node, uuid)
            return
        created = ch is None
        if ch is None:
            ch = Channel(node, uuid)
            other = event.get("Other-Leg-Unique-ID")
            if other.__class__ is str and is_uuid(other):
                ch.other_leg = other
            self._insert(ch)
        before = (ch.account_id, ch.owner_id, ch.authorizing_id)
        self._merge(ch, event, name, raw)
        if name == "CHANNEL_ANSWER":
            ch.answered = True
        elif name == "CHANNEL_HOLD":
            ch.is_onhold = True
        elif name == "CHANNEL_UNHOLD":
            ch.is_onhold = False
        elif name == "CHANNEL_HANGUP":
            self._ending(ch).note_cause(event)
        elif name == "CHANNEL_HANGUP_COMPLETE":
            self._ending(ch).merge(event)
        elif name == "RECORD_START" or name == "RECORD_STOP":
            self._recording(ch, event, name == "RECORD_START")
        partner = None
        if name == "CHANNEL_BRIDGE" or name == "CHANNEL_UNBRIDGE":
            partner = self._bridge(node, event, name == "CHANNEL_BRIDGE")
        if (ch.account_id, ch.owner_id, ch.authorizing_id) != before:
            self._unindex(ch, before)
            self._index(ch)
        ch.last_seen = self._clock()
        self._touch(ch)
        if partner is not None:
            self._touch(partner)
        if self._on_change:
            # "create" for a channel new to whoever listens: new here, renamed, or just given
            # its account (an account's listeners could not have known it before).
            joined = before[0] is None and ch.account_id is not None
            kind = "create" if created or renamed or joined else "update"
            for listener in self._on_change:
                try:
                    listener(kind, ch, name)
                except Exception:
                    _listener_failed(listener, name)
            if partner is not None and partner is not ch:
                for listener in self._on_change:
                    try:
                        listener("update", partner, ("peer", name))
                    except Exception:
                        _listener_failed(listener, name)
        named = self._on_named.get(name) if self._on_named else None
        if named:
            for listener in named:
                try:
                    listener("update", ch, name)
                except Exception:
                    _listener_failed(listener, name)

    def hydrate(self, node: str, dump: Event) -> Channel | None:
        """Add or refresh a channel from `uuid_dump <uuid> json` (a CHANNEL_DATA event)."""
        uuid = dump.get("Unique-ID")
        created = whole_number(dump.get("Caller-Channel-Created-Time"))
        if not isinstance(uuid, str) or not uuid or self.is_tombstoned(node, uuid, created):
            return None
        event = dict(dump)
        event["Event-Name"] = "CHANNEL_DATA"
        self.apply(node, event)
        return self._rows.get((node, uuid))

    def remove(self, node: str, uuid: str, tombstone: bool = True) -> Channel | None:
        """Forget a channel. `tombstone` only when the switch said it was destroyed: its late
        events must not bring it back. An absence (a listing, a uuid_dump) never tombstones,
        because FreeSWITCH's listing can lag behind a live call."""
        key = (node, uuid)
        ch = self._rows.get(key)
        if tombstone:
            now = self._clock()
            # (a destroy for a channel never heard of: any channel created before now)
            created = ch.created_us if ch is not None else int(time.time() * 1_000_000)
            held = self._tombstones.get(key)
            if held is not None and held[0] > now and held[1] > created:
                created = held[1]  # a later channel's tombstone still stands for its events
            self._tombstones[key] = (now + self.tombstone_ttl, created)
            self._tombstones.move_to_end(key)
            self._prune_tombstones(now)
        if ch is None:
            return None
        self._forget(ch)
        self._notify("destroy", ch, None)
        return ch

    def now(self) -> float:
        """The table's clock, as `last_seen` reads it."""
        return self._clock()

    def mark_stale(self, node: str) -> None:
        """The node's connection dropped: what we hold of it is no longer confirmed."""
        if node not in self._stale_since:
            self._stale_since[node] = self._clock()
            self._announce(node, "STALE")

    def clear_stale(self, node: str) -> None:
        if self._stale_since.pop(node, None) is not None:
            self._announce(node, "FRESH")

    def _announce(self, node: str, why: str) -> None:
        # `stale` is computed, not stored: every list holding one of these channels changed,
        # and the listener hears of each channel.
        channels = self.node_rows(node)
        for ch in channels:
            for scope in self._scopes_of(ch):
                scope.gen += 1
        for ch in channels:
            self._notify("update", ch, why)

    def drop_stale(self, node: str) -> int:
        """The grace period is over: forget the node's channels not heard of since the drop."""
        since = self._stale_since.get(node)
        if since is None:
            return 0
        doomed = [ch.uuid for ch in self.node_rows(node) if ch.last_seen <= since]
        for uuid in doomed:
            self.remove(node, uuid, tombstone=False)
        return len(doomed)

    def purge_node(self, node: str, before: float | None = None) -> int:
        """Forget a node's channels (FreeSWITCH restarted): all of them, or those not heard
        of since `before` (what the new run's connection has already told is kept)."""
        rows = [ch for ch in self.node_rows(node) if before is None or ch.last_seen < before]
        for ch in rows:
            self.remove(node, ch.uuid, tombstone=False)
        stale_keys = [k for k in self._tombstones if k[0] == node]
        for k in stale_keys:
            del self._tombstones[k]
        return len(rows)

    # -- internals ---------------------------------------------------------------------------

    def _refuse(self, field: str) -> None:
        self.refused[field] = self.refused.get(field, 0) + 1

    @staticmethod
    def _ending(ch: Channel) -> Ending:
        if ch.ending is None:
            ch.ending = Ending()
        return ch.ending

    def _merge(self, ch: Channel, e: Event, name: str, raw: bytes | None) -> None:
        """Copy what this event says; headers it lacks leave the row as it was."""
        get = e.get
        v = get("Channel-Name")
        if v and v != ch.name and (v := usable(v)) is not None:
            ch.name = v
            if v.startswith("loopback/"):
                ch.is_loopback = True
        if get("Answer-State") == "answered":
            ch.answered = True
        if not ch.created_known:
            self._created(ch, get("Caller-Channel-Created-Time"))
        if name in _NO_VARIABLES:
            chains = _FIXED_WITH_MODES
        else:
            chains = self._chains
            if "variable_loopback_leg" in e:
                ch.is_loopback = True
            # An event that carries variables carries all of them, so it is the whole truth
            # about the custom variables; one without variables says nothing about them.
            probe = self._ccv_probe
            if raw is not None and probe is not None and probe not in raw:
                found = None
                chains = self._chains_without_ccvs
            else:
                found = self._ccvs(e, ch.ccvs)
            if "variable_uuid" in e:
                ch.ccvs = found
                ch.vars_seen = True
            elif found:
                ch.ccvs = found
            if name not in _ENDING_EVENTS:  # a call that hangs up changes codec no more
                self._details(ch, e)
        # the first usable header of each chain (channelsd/fields.py): ~30 lookups an event
        self._merge_fields(ch, e, chains, self.refused)

    def _details(self, ch: Channel, e: Event) -> None:
        """The media and signalling details an event with variables carries (DETAIL_CHAINS).

        A channel's details dict is never changed in place: a change makes a new one, and
        details with nothing particular to the call (codecs, the application, no SIP ids) are
        one dict shared by every channel that has them."""
        # A loopback leg's event is not asked for the dozen RTP and SIP headers it never has.
        details = _CORE_DETAILS if ch.is_loopback else _RTP_DETAILS
        held = ch.details
        # None when the channel holds each detail the event carries (most events)
        found = self._pick_details(held, e, details, self.refused)
        get = e.get
        for kind, header in SECURE_MEDIA:
            if get(header) == "true":
                if held is None or held.get("secure_media") != kind:
                    found = {**(found or {}), "secure_media": kind}
                break
        if not found:
            return
        if held is not None:
            found = {**held, **found}
            if found == held:
                return
        if PERSONAL_DETAILS.isdisjoint(found):
            shared = self._shared_details
            frozen = tuple(found.items())
            kept = shared.get(frozen)
            if kept is not None:
                found = kept
            elif len(shared) < _SHARED_DETAILS_MAX and all(
                v.__class__ is not str or len(v) <= _SHARED_DETAIL_CHARS for v in found.values()
            ):
                shared[frozen] = found
        ch.details = found

    def _recording(self, ch: Channel, e: Event, started: bool) -> None:
        path = usable(e.get("Record-File-Path"))
        if path is None:
            self._refuse("recording")
            return
        kept = tuple(p for p in ch.recordings if p != path)
        if started and len(kept) >= MAX_RECORDINGS:
            self._refuse("recording")
            return
        ch.recordings = (*kept, path) if started else kept

    def _ccvs(self, e: Event, held: dict[str, Any] | None) -> dict[str, Any] | None:
        """The custom channel variables an event carries. Unchanged, the channel keeps the
        dict it holds; names are shared by every channel, and so are the values of the
        variables many channels share (an account, a realm, a reseller)."""
        prefix = self.identity.ccv_prefix
        cut = len(prefix)
        names = self._ccv_names
        found = {}
        for k, v in e.items():
            if k.startswith(prefix):
                if v.__class__ is str and len(v) <= MAX_VALUE_CHARS:
                    name = names.get(k)
                    if name is None:
                        if len(k) - cut > MAX_VALUE_CHARS:  # a name as absurd as a value
                            self._refuse("custom_channel_vars")
                            continue
                        name = k[cut:]
                        # a hostile switch's names stop here, in number and in length
                        if len(names) < _CCV_NAMES_MAX and len(name) <= _CCV_NAME_KEPT_CHARS:
                            name = names[k] = intern(name)
                    found[name] = v
                else:
                    self._refuse("custom_channel_vars")
        if not found:
            return None
        if found == held:
            return held
        shared = self._shared_ccvs
        for name, v in found.items():
            if name in shared:
                found[name] = intern(v)
        return found

    def _bridge(self, node: str, e: Event, bridged: bool) -> Channel | None:
        """Set or clear other_leg on both legs; returns the leg the event was not about."""
        a_uuid = e.get("Bridge-A-Unique-ID") or e.get("Unique-ID")
        b_uuid = e.get("Bridge-B-Unique-ID") or e.get("Other-Leg-Unique-ID")
        if not (is_uuid(a_uuid) and is_uuid(b_uuid)):
            self._refuse("other_leg")
            return None
        a = self._rows.get((node, a_uuid))
        b = self._rows.get((node, b_uuid))
        if bridged:
            if a:
                a.other_leg = b_uuid
            if b:
                b.other_leg = a_uuid
            # A loopback leg cannot be taken off hold; bridging the pair again is the way out,
            # and FreeSWITCH sends no CHANNEL_UNHOLD for it (freeswitch-actions-verified §4.3).
            for leg in (a, b):
                if leg is not None and leg.is_loopback and leg.is_onhold:
                    leg.is_onhold = False
        else:
            for leg, partner in ((a, b_uuid), (b, a_uuid)):
                if leg and leg.other_leg == partner:
                    leg.other_leg = None
        return b if e.get("Unique-ID") == a_uuid else a

    def _apply_api(self, node: str, e: Event) -> None:
        """uuid_setvar fires no channel event, only this API event: keep identity current."""
        cmd = e.get("API-Command")
        arg = e.get("API-Command-Argument")
        if cmd not in ("uuid_setvar", "uuid_setvar_multi") or not isinstance(arg, str):
            return
        uuid, _, rest = arg.strip().partition(" ")
        ch = self._rows.get((node, uuid))
        if ch is None:
            return
        if cmd == "uuid_setvar":
            var, _, value = rest.partition(" ")
            pairs = [(var, value)]
        else:
            pairs = [(p.partition("=")[0], p.partition("=")[2]) for p in rest.split(";") if p]
        before = self._index_keys(ch)
        changed = False
        for var, value in pairs:
            if len(value) > MAX_VALUE_CHARS or len(var) > MAX_VALUE_CHARS:
                self._refuse("api_value")
                continue
            header = "variable_" + var
            if header.startswith(self.identity.ccv_prefix):
                ccvs = dict(ch.ccvs or {})
                key = header[len(self.identity.ccv_prefix) :]
                if value:
                    ccvs[key] = value
                else:
                    ccvs.pop(key, None)
                ch.ccvs = ccvs
                changed = True
            for field, chain in self.identity.chains:
                if header in chain:
                    setattr(ch, field, value or None)
                    changed = True
            if header == "variable_presence_id":
                ch.presence_id = value or None
                changed = True
        if not changed:
            return
        if self._index_keys(ch) != before:
            self._unindex(ch, before)
            self._index(ch)
        ch.last_seen = self._clock()
        self._touch(ch)
        self._notify("create" if before[0] is None and ch.account_id else "update", ch, "API")

    def _rename(self, node: str, old: str, new: str) -> bool:
        ch = self._rows.get((node, old))
        if ch is None:
            return False
        # A row already under the new uuid is the same leg heard of before the rename (events
        # reordered): the renamed row, which knows more, replaces it everywhere. Unless it is
        # another channel that hung up there (created at another time; FreeSWITCH frees a
        # uuid before it fires its DESTROY): its late events must not end the renamed call,
        # so it leaves a tombstone, which the renamed row's own events pass.
        there = self._rows.get((node, new))
        other = (
            there is not None
            and there.ending is not None
            and there.created_known
            and ch.created_known
            and there.created_us != ch.created_us
        )
        self.remove(node, new, tombstone=other)
        self._forget(ch)
        self._notify("destroy", ch, None)  # streams saw it under its old uuid: that one is gone
        ch.rename(new)
        self._insert(ch)
        self._touch(ch)
        return True

    def _insert(self, ch: Channel) -> None:
        self._rows.add(ch.key, ch)
        first = self._by_uuid.get(ch.uuid)
        if first is None:
            self._by_uuid[ch.uuid] = ch
        elif first is not ch:
            self._twins.setdefault(ch.uuid, []).append(ch)
        self._node_counts[ch.node] = self._node_counts.get(ch.node, 0) + 1
        self._index(ch)

    def _forget(self, ch: Channel) -> None:
        """Take a row out of every index and cache: afterwards nothing here refers to it."""
        key = ch.key
        if self._rows.discard(key) is not None:
            left = self._node_counts[ch.node] - 1
            if left:
                self._node_counts[ch.node] = left
            else:
                del self._node_counts[ch.node]
        self._unindex(ch, self._index_keys(ch))
        uuid = ch.uuid
        twins = self._twins.get(uuid)
        if self._by_uuid.get(uuid) is ch:
            if twins:
                self._by_uuid[uuid] = twins.pop(0)
            else:
                del self._by_uuid[uuid]
        elif twins and ch in twins:
            twins.remove(ch)
        if twins is not None and not twins:
            del self._twins[uuid]
        if self._json_kept.get(key) is ch:
            del self._json_kept[key]
        ch.cached = None

    @staticmethod
    def _index_keys(ch: Channel) -> tuple[str | None, str | None, str | None]:
        return (ch.account_id, ch.owner_id, ch.authorizing_id)

    def _index(self, ch: Channel) -> None:
        account, owner, device = ch.account_id, ch.owner_id, ch.authorizing_id
        if account is None:
            return
        key = ch.key
        _scope(self._by_account, account).add(key, ch)
        if owner is not None:
            _scope(self._by_owner, (account, owner)).add(key, ch)
        if device is not None:
            _scope(self._by_device, (account, device)).add(key, ch)

    def _scopes_of(self, ch: Channel) -> list[Scope]:
        found = [self._rows]
        account = ch.account_id
        if account is not None:
            for index, ikey in (
                (self._by_account, account),
                (self._by_owner, (account, ch.owner_id)),
                (self._by_device, (account, ch.authorizing_id)),
            ):
                scope = index.get(ikey)
                if scope is not None:
                    found.append(scope)
        return found

    def _touch(self, ch: Channel) -> None:
        """The channel changed: its cached JSON and the answers of its lists are out of date.
        (_scopes_of(), unrolled: this runs for every event that changes something.)"""
        ch.cached = None
        self._rows.gen += 1
        account = ch.account_id
        if account is not None:
            scope = self._by_account.get(account)
            if scope is not None:
                scope.gen += 1
            if ch.owner_id is not None:
                scope = self._by_owner.get((account, ch.owner_id))
                if scope is not None:
                    scope.gen += 1
            if ch.authorizing_id is not None:
                scope = self._by_device.get((account, ch.authorizing_id))
                if scope is not None:
                    scope.gen += 1

    def _created(self, ch: Channel, v: Any) -> bool:
        """FreeSWITCH's creation time of the channel, once an event carries it (not 0); True
        when that moved the channel."""
        created = whole_number(v)
        if not created:
            return False
        ch.created_known = True
        if created == ch.created_us:
            return False
        # Out of the kept orders while its key changes: a search in an order must not meet it.
        moving = [scope for scope in self._scopes_of(ch) if scope.unplace(ch)]
        ch.created_us = created
        for scope in moving:
            scope.place(ch)
        return True

    def _moved_on(self, ch: Channel, e: Event) -> bool:
        """CHANNEL_STATE / CHANNEL_CALLSTATE of a known channel; False when the event needs
        the full path (the channel's end)."""
        get = e.get
        state = get("Channel-State")  # (_final, its common case inlined: half of all events)
        if state == _FINAL_STATE or (state.__class__ is list and _final(state)):
            return False
        changed = self._merge_fields(ch, e, _STATE_CHAINS, self.refused) > 0
        if not ch.answered and get("Answer-State") == "answered":
            ch.answered = changed = True
        if not ch.created_known:
            changed = self._created(ch, get("Caller-Channel-Created-Time")) or changed
        ch.last_seen = self._clock()
        if changed:
            self._touch(ch)
            name = e["Event-Name"]
            for listener in self._on_change:
                try:
                    listener("update", ch, name)
                except Exception:
                    _listener_failed(listener, name)
        return True

    def _unindex(self, ch: Channel, keys: tuple[str | None, str | None, str | None]) -> None:
        account, owner, device = keys
        if account is None:
            return
        key = ch.key
        for index, ikey in (
            (self._by_account, account),
            (self._by_owner, (account, owner)),
            (self._by_device, (account, device)),
        ):
            scope = index.get(ikey)
            if scope is not None:
                scope.discard(key)
                if not scope:
                    del index[ikey]

    def _prune_tombstones(self, now: float) -> None:
        ts = self._tombstones
        while len(ts) > self.tombstones_max:
            ts.popitem(last=False)
        while ts:
            key, (expiry, _) = next(iter(ts.items()))
            if expiry > now:
                break
            del ts[key]
        # A dict keeps the table it grew to until enough insertions make it resize: after a
        # burst of hang-ups expires, 30,000 tombstones' table (~4 MB) stayed while 60 were
        # left, or not, depending on how many destroys had happened since (the soak's RSS
        # after - before moved by as much). Copied at a quarter of its peak, it follows what
        # it holds; the copy is of what is left, so the cost is amortised over the deletions.
        n = len(ts)
        if n > self._tombstones_peak:
            self._tombstones_peak = n
        elif self._tombstones_peak >= TOMBSTONES_COMPACT_FROM and n * 4 <= self._tombstones_peak:
            self._tombstones = OrderedDict(ts)
            self._tombstones_peak = n
