"""What channelsd's own commands started and the switch has not reported yet.

Every state check of an action reads the table, and the table is what the switch's events
said. A command channelsd itself just sent changes a channel now, but its events come on the
other connection, a moment later (att_xfer with hold music the switch could not play started
10 s late on the reference switch, §2.3). Until they arrive the table shows the channel as it
was, and a check made meanwhile -- the next module of a metaflow, or a second request sent
right after the first -- would pass where it should refuse: a transferor hung up while its
target is about to ring (everybody lost, §2.5), a loopback leg held twice, someone else's
recording stopped.

So each command whose effect a later check reads leaves a Pending here, on the channels it
affects, until the switch's events settle it: an event it names, for which its test holds
(CHANNEL_HOLD; RECORD_START naming the path), a row that shows the effect (`reached`: the
transferor's call state moved on -- the table folds CHANNEL_CALLSTATE without telling
listeners, so that one is read from the row), the channel's destroy, or its deadline
(`[actions] settle_timeout`), or the destroy of another channel it names (`ends_with`: the
target of an att_xfer that failed at once, whose transferor's call never moved on). Checks
consult find(); a metaflow waits for its previous module's Pendings (wait()) before checking
the next one.

Bounded: a Pending replaces the one of the same kind and tag on the same channels, expired
ones are swept as new ones come, and a channel's destroy drops them all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.event

from channelsd.channel import Channel
from channelsd.table import ChannelTable

# The events that may settle something; the table calls on_event for these (and destroys).
# (Not CHANNEL_CALLSTATE: the table folds it into the row without telling listeners.)
SETTLING_EVENTS = (
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_HANGUP",
    "CHANNEL_HOLD",
    "CHANNEL_UNHOLD",
    "RECORD_START",
    "RECORD_STOP",
)
# Expired Pendings are swept when a new one comes and there are more than this many.
SWEEP_ABOVE = 256
# How often wait() looks at the rows of Pendings settled by what a row shows.
_POLL = 0.01


@dataclass(eq=False)
class Pending:
    """One effect of one command, on the channels `uuids` of `node`."""

    kind: str
    node: str
    uuids: tuple[str, ...]
    settles: frozenset[str]
    until: float
    tag: Any = None  # what tells two Pendings of one kind apart (a recording's path)
    value: Any = None  # what the check needs to know (the hold state to expect)
    test: Callable[[Channel, str], bool] | None = None
    reached: Callable[[], bool] | None = None
    ends_with: Callable[[Channel], bool] | None = None
    done: gevent.event.Event = field(default_factory=gevent.event.Event)

    def open(self, now: float) -> bool:
        return not self.done.is_set() and now < self.until


class Inflight:
    """The Pendings of one daemon, by (node, uuid)."""

    def __init__(self, table: ChannelTable, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_key: dict[tuple[str, str], list[Pending]] = {}
        # Pendings that another channel's destroy may settle (ends_with); few at a time.
        self._on_destroys: list[Pending] = []
        table.listen(self._on_event, destroys_only=True, names=SETTLING_EVENTS)

    def __len__(self) -> int:
        return len({id(p) for entries in self._by_key.values() for p in entries})

    def add(
        self,
        kind: str,
        node: str,
        uuids: Iterable[str],
        settles: Iterable[str],
        seconds: float,
        *,
        tag: Any = None,
        value: Any = None,
        test: Callable[[Channel, str], bool] | None = None,
        reached: Callable[[], bool] | None = None,
        ends_with: Callable[[Channel], bool] | None = None,
    ) -> Pending:
        now = self._clock()
        keys = [(node, u) for u in dict.fromkeys(uuids)]
        pending = Pending(
            kind,
            node,
            tuple(u for _, u in keys),
            frozenset(settles),
            now + seconds,
            tag,
            value,
            test,
            reached,
            ends_with,
        )
        for key in keys:
            for old in self._by_key.get(key, ()):
                if old.kind == kind and old.tag == tag:
                    self._settle(old)  # superseded: the newer command is what counts
        for key in keys:
            self._by_key.setdefault(key, []).append(pending)
        if ends_with is not None:
            self._on_destroys.append(pending)
        if len(self._by_key) > SWEEP_ABOVE:
            self._sweep(now)
        return pending

    def find(self, node: str, uuid: str, *kinds: str) -> list[Pending]:
        """The open Pendings on a channel, of `kinds` (any kind if none is named)."""
        entries = self._by_key.get((node, uuid))
        if not entries:
            return []
        now = self._clock()
        return [
            p
            for p in list(entries)
            if (not kinds or p.kind in kinds) and p.open(now) and not self._reached(p)
        ]

    def wait(self, pendings: Iterable[Pending], timeout: float) -> bool:
        """Wait until every Pending settled or expired, at most `timeout` seconds; whether
        they all did."""
        deadline = self._clock() + timeout
        for p in pendings:
            while p.open(self._clock()) and not self._reached(p):
                left = min(deadline, p.until) - self._clock()
                if left <= 0:
                    return False
                p.done.wait(min(left, _POLL) if p.reached else left)
        return True

    # -- settling ------------------------------------------------------------------------------

    def _on_event(self, kind: str, ch: Channel, info: Any) -> None:
        if kind == "destroy" and self._on_destroys:
            now = self._clock()
            for p in list(self._on_destroys):
                if not p.open(now) or (p.node == ch.node and p.ends_with and p.ends_with(ch)):
                    self._settle(p)
        entries = self._by_key.get((ch.node, ch.uuid))
        if not entries:
            return
        if kind == "destroy":
            for p in list(entries):
                self._settle(p)
            return
        for p in list(entries):
            if info in p.settles and (p.test is None or p.test(ch, info)):
                self._settle(p)

    def _reached(self, pending: Pending) -> bool:
        if pending.reached is not None and pending.reached():
            self._settle(pending)
            return True
        return False

    def _settle(self, pending: Pending) -> None:
        pending.done.set()
        if pending.ends_with is not None and pending in self._on_destroys:
            self._on_destroys.remove(pending)
        for uuid in pending.uuids:
            key = (pending.node, uuid)
            entries = self._by_key.get(key)
            if entries is None:
                continue
            kept = [p for p in entries if p is not pending]
            if kept:
                self._by_key[key] = kept
            else:
                del self._by_key[key]

    def _sweep(self, now: float) -> None:
        for entries in list(self._by_key.values()):
            for p in entries:
                if not p.open(now):
                    self._settle(p)
