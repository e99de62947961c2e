"""Replay every real capture, byte for byte, into a running daemon and compare with the truth.

The stand-in writes the recorded event frames (json and plain runs) to the daemon's event
socket; at several cut points the API must list exactly the channels alive in FreeSWITCH at
that moment. The truth is derived from the capture itself: a channel is alive from its
CHANNEL_CREATE to its CHANNEL_DESTROY.
"""

from typing import Any

import pytest

from channelsd.events import parse_json, parse_plain
from channelsd.standin.replay import load_frames

from conftest import CAPTURES, wait_until

SCENARIOS = [
    "s1_park_kill",
    "s2_transfer",
    "s3_break",
    "s4_errors",
    "s5_vars",
    "s6_intercept",
    "s7_burst50",
]
CUT_AFTER = {
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_HANGUP",
    "CHANNEL_DESTROY",
}
MAX_CUTS = 12
GREGORIAN = 62167219200


def body_of(frame: Any) -> bytes:
    return frame.raw.split(b"\n\n", 1)[1]


def decode(frame: Any) -> dict[str, Any]:
    parse = parse_json if frame.ctype == "text/event-json" else parse_plain
    return parse(body_of(frame))


class Truth:
    """What FreeSWITCH had at a point of the capture, followed event by event."""

    def __init__(self) -> None:
        self.created: dict[str, dict[str, Any]] = {}
        self.destroyed: set[str] = set()
        self.pending: set[str] = set()  # legs seen but not yet created: no clean cut there
        self.answered: set[str] = set()
        self.bridged: dict[str, str | None] = {}
        self.identity: dict[str, dict[str, str]] = {}

    def feed(self, e: dict[str, Any]) -> None:
        name, uuid = e.get("Event-Name", ""), e.get("Unique-ID")
        if not uuid or not (name.startswith("CHANNEL_") or name == "CALL_UPDATE"):
            return
        if name == "CHANNEL_CREATE":
            self.created[uuid] = e
            self.pending.discard(uuid)
        elif name == "CHANNEL_DESTROY":
            self.destroyed.add(uuid)
        elif uuid not in self.created and uuid not in self.destroyed and name != "CHANNEL_UUID":
            self.pending.add(uuid)
        if name == "CHANNEL_ANSWER" or e.get("Answer-State") == "answered":
            self.answered.add(uuid)
        if name in ("CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE"):
            a, b = e["Bridge-A-Unique-ID"], e["Bridge-B-Unique-ID"]
            self.bridged[a] = b if name == "CHANNEL_BRIDGE" else None
            self.bridged[b] = a if name == "CHANNEL_BRIDGE" else None
        ident = {
            k: e[f"variable_{k}"]
            for k in ("account_id", "owner_id", "authorizing_id")
            if f"variable_{k}" in e
        }
        if ident:
            self.identity.setdefault(uuid, {}).update(ident)

    @property
    def alive(self) -> set[str]:
        return set(self.created) - self.destroyed

    @property
    def clean(self) -> bool:
        return not (self.pending - self.destroyed)


def cut_points(events: list[dict[str, Any]]) -> list[int]:
    truth = Truth()
    cuts = []
    for i, e in enumerate(events):
        truth.feed(e)
        if e.get("Event-Name") in CUT_AFTER and truth.clean:
            cuts.append(i + 1)
    if len(cuts) > MAX_CUTS:
        step = len(cuts) / MAX_CUTS
        cuts = [cuts[int(k * step)] for k in range(MAX_CUTS)]
    return sorted(set(cuts + [len(events)]))


def listed_if(h: Any, expected: set[str]) -> list[dict[str, dict[str, Any]]]:
    """[the system-wide list by uuid] once it holds exactly the expected channels, else []."""
    items = {i["uuid"]: i for i in h.api.data("/v2/channels")}
    return [items] if set(items) == expected else []


@pytest.mark.parametrize("fmt", ["json", "plain"])
@pytest.mark.parametrize("sid", SCENARIOS)
def test_replayed_capture_matches_freeswitch_at_every_cut(
    fmt: str, sid: str, switch: Any, make_daemon: Any
) -> None:
    frames = [f for f in load_frames(CAPTURES / fmt / f"{sid}.events.raw.gz") if f.event_name]
    events = [decode(f) for f in frames]
    cuts = cut_points(events)
    assert len(cuts) >= 2, "the capture should offer cut points"
    h = make_daemon([switch])
    truth = Truth()
    sent = 0
    for cut in cuts:
        switch.send_frames(frames[sent:cut])
        for e in events[sent:cut]:
            truth.feed(e)
        sent = cut
        expected = truth.alive
        got = wait_until(
            lambda exp=expected: listed_if(h, exp),
            what=f"{fmt}/{sid} cut {cut}: channels {sorted(expected)}",
        )[0]
        for uuid, item in got.items():
            create = truth.created[uuid]
            assert item["answered"] is (uuid in truth.answered), (cut, uuid)
            created_us = int(create["Caller-Channel-Created-Time"])
            assert item["timestamp"] == created_us // 1_000_000 + GREGORIAN
            assert item["direction"] == create["Call-Direction"]
            if uuid in truth.bridged:
                assert item.get("other_leg") == truth.bridged[uuid], (cut, uuid)
            for key, value in truth.identity.get(uuid, {}).items():
                assert item[key] == value, (cut, uuid, key)
            assert item["node"] == "fs1" and item["stale"] is False
    if sid == "s5_vars":
        assert any(truth.identity.values()), "s5 carries account/owner/device variables"
