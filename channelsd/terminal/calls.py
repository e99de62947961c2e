"""Channels grouped into calls, and their fields worded for the operator.

The same grouping as the console's (channelsd/console/store.js): legs that name each other as
`other_leg`, or share a `bridge_id`, are one call. Items come from the daemon, so every field
is read defensively: a missing or oddly typed value reads as unknown, never as a crash.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from channelsd.channel import GREGORIAN_OFFSET

Item = Mapping[str, Any]


def text(item: Item, key: str) -> str:
    """A field as text; anything but a string, a number or a boolean reads as empty."""
    v = item.get(key)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str | int | float):
        return str(v)
    return ""


def number(item: Item, key: str) -> float | None:
    v = item.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return v


def by_age(item: Item) -> tuple[float, int, str, str]:
    """Oldest first; within one second the inbound (caller's) leg before the outbound."""
    return (
        number(item, "timestamp") or 0,
        0 if item.get("direction") == "inbound" else 1,
        text(item, "uuid"),
        text(item, "node"),
    )


Key = tuple[str, str]


def key(item: Item) -> Key | None:
    """What names a channel: its node and its uuid. A uuid is only unique on its switch (an
    originate may choose it), so two nodes can each have a channel with the same uuid."""
    uuid = item.get("uuid")
    if not isinstance(uuid, str) or not uuid:
        return None
    node = item.get("node")
    return (node if isinstance(node, str) else "", uuid)


def group(items: Iterable[Item]) -> list[list[Item]]:
    """The calls: each a list of legs, oldest first; calls ordered by their first leg.

    A channel's `other_leg` and `bridge_id` name channels of its own switch: legs are joined
    within one node only."""
    by_key: dict[Key, Item] = {}
    for item in items:
        k = key(item)
        if k is not None:
            by_key[k] = item
    parent = {k: k for k in by_key}

    def find(x: Key) -> Key:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: Key, b: Key) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb

    first_of_bridge: dict[Key, Key] = {}
    for k, item in by_key.items():
        node = k[0]
        other = (node, text(item, "other_leg"))
        if other in by_key:
            union(k, other)
        bridge = text(item, "bridge_id")
        if bridge:
            if (node, bridge) in first_of_bridge:
                union(k, first_of_bridge[(node, bridge)])
            else:
                first_of_bridge[(node, bridge)] = k
    groups: dict[Key, list[Item]] = {}
    for k, item in by_key.items():
        groups.setdefault(find(k), []).append(item)
    calls = [sorted(legs, key=by_age) for legs in groups.values()]
    calls.sort(key=lambda legs: by_age(legs[0]))
    return calls


def party(name: str, num: str) -> str:
    if name and num and name != num:
        return f"{name} ({num})"
    return name or num


def caller(item: Item) -> str:
    return party(text(item, "caller_id_name"), text(item, "caller_id_number")) or "unknown"


def callee(item: Item) -> str:
    found = party(text(item, "callee_id_name"), text(item, "callee_id_number"))
    return found or text(item, "destination") or "unknown"


def state(item: Item) -> str:
    return text(item, "call_state") or text(item, "state")


def account(item: Item, wide: bool = False) -> str:
    acc = text(item, "account_id")
    realm = text(item, "realm")
    if wide:
        return f"{realm} ({acc})" if realm and acc else realm or acc
    if realm:
        return realm
    return f"{acc[:8]}…" if len(acc) > 12 else acc


def clock(seconds: float | None) -> str:
    """A duration as m:ss, or h:mm:ss from an hour on."""
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    h, m, ss = s // 3600, s % 3600 // 60, s % 60
    return f"{h}:{m:02d}:{ss:02d}" if h else f"{m}:{ss:02d}"


def flags(item: Item) -> list[str]:
    """The states worth a badge: on hold, recorded, encrypted media, node disconnected."""
    found = []
    if item.get("is_onhold") is True:
        found.append("hold")
    if item.get("is_recording") is True:
        found.append("rec")
    if item.get("is_secure") is True:
        found.append("srtp")
    if item.get("stale") is True:
        found.append("stale")
    return found


# FreeSWITCH's sip_hangup_disposition: who ended the call, for the "Hung up by" column (so
# each reads after those words). "send" is the switch's side, "recv" the far end's; a refusal
# is a 4xx/5xx answer to the call, a cancel ends it while it rings.
_WHO = {
    "send_bye": "switch",
    "recv_bye": "far end",
    "send_cancel": "switch (cancel)",
    "recv_cancel": "far end (cancel)",
    "send_refuse": "switch (refused)",
    "recv_refuse": "far end (refused)",
}


def who_hung_up(item: Item) -> str:
    disposition = text(item, "hangup_disposition")
    return _WHO.get(disposition, disposition)


class Clock:
    """Call durations that keep ticking, on the daemon's clock rather than this box's.

    Items carry `timestamp` (creation, Gregorian seconds) and `elapsed_s` (the daemon's now
    minus that, when sent): the gap between the daemon's now and ours is learnt from them."""

    def __init__(self) -> None:
        self.skew: float | None = None

    def learn(self, items: Iterable[Item], now: float | None = None) -> None:
        now = time.time() if now is None else now
        for item in items:
            ts, elapsed = number(item, "timestamp"), number(item, "elapsed_s")
            if ts is None or elapsed is None:
                continue
            sample = ts - GREGORIAN_OFFSET + elapsed - now
            # The largest sample is the least delayed by the network; +0.5 centres it in
            # its whole second.
            if self.skew is None or sample + 0.5 > self.skew:
                self.skew = sample + 0.5

    def seconds(self, item: Item, now: float | None = None) -> float | None:
        ts = number(item, "timestamp")
        if ts is None or self.skew is None:
            return number(item, "elapsed_s")
        now = time.time() if now is None else now
        return max(0.0, now + self.skew - (ts - GREGORIAN_OFFSET))
