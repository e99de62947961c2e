"""The channel table frees an ended channel's row by reference counting, the moment it ends:
never through the cycle collector, whose full collections walk every object it tracks (16-60
ms with 10,000 channels) and come only when enough has piled up. See also test_http_cycles.py
for the HTTP connections."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from channelsd.channel import Channel
from channelsd.events import parse_json
from channelsd.standin.replay import load_frames
from channelsd.table import ChannelTable

from conftest import CAPTURES


def _capture_events(name: str) -> list[tuple[dict[str, Any], bytes]]:
    frames = load_frames(CAPTURES / "json" / f"{name}.events.raw.gz")
    out = []
    for f in frames:
        if f.ctype == "text/event-json":
            body = f.raw.split(b"\n\n", 1)[1]
            out.append((parse_json(body), body))
    return out


@pytest.mark.parametrize("capture", ["s7_burst50", "s8_sip_call", "s2_transfer", "s6_intercept"])
def test_ended_channels_are_freed_without_the_collector(capture: str) -> None:
    """Every channel of a real capture created, bridged, recorded, renamed and destroyed with
    the collector off: none may be left among the objects the collector knows of. A cycle
    through a row would keep it (and its variables) until a full collection."""
    events = _capture_events(capture)
    node = f"gc-{capture}"  # the suite's other tests may keep channels of their own alive
    table = ChannelTable(tombstone_ttl=0.0)
    gc.collect()
    gc.disable()
    try:
        for event, body in events:
            table.apply(node, event, body)
        for event, body in events:  # and once more: late events for the tombstoned
            table.apply(node, event, body)
        table.expire_tombstones()
        live = {id(ch) for ch in table.all()}
        left = [
            o
            for o in gc.get_objects()
            if isinstance(o, Channel) and o.node == node and id(o) not in live
        ]
    finally:
        gc.enable()
    assert left == [], f"{len(left)} ended rows kept alive by a reference cycle"
    assert len(table) == len(live)
