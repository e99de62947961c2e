"""Full collections paced by the daemon (channelsd.gcpacing), and the premise that makes that
safe: the channel table frees its rows by reference counting, never needing the collector."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from channelsd.channel import Channel
from channelsd.events import parse_json
from channelsd.gcpacing import GcPacer
from channelsd.standin.replay import load_frames
from channelsd.table import ChannelTable

from conftest import CAPTURES


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_full_collections_run_when_due_and_only_then(restored: None) -> None:
    clock = Clock()
    seen: list[tuple[float, int]] = []
    pacer = GcPacer(every=60.0, clock=clock, on_full=lambda s, n: seen.append((s, n)))
    saved = gc.get_threshold()
    clock.now += 3600
    pacer.tick()
    assert seen == [] and gc.get_threshold() == saved  # nothing until taken over
    young, older, _ = saved
    pacer.take_over()
    assert gc.get_threshold()[:2] == (young, older)
    assert gc.get_threshold()[2] >= 2**30  # the interpreter no longer starts them
    assert gc.get_freeze_count() > 0
    full_before = gc.get_stats()[2]["collections"]
    clock.now += 59.0
    pacer.tick()
    assert seen == [] and gc.get_stats()[2]["collections"] == full_before
    cycle: list[Any] = []
    cycle.append(cycle)  # garbage only the collector can find
    del cycle
    clock.now += 1.0
    pacer.tick()
    assert len(seen) == 1 and seen[0][1] >= 1 and pacer.collections == 1
    assert gc.get_stats()[2]["collections"] == full_before + 1
    pacer.tick()  # the next one is 60 s away again
    assert len(seen) == 1
    pacer.release()
    assert gc.get_threshold() == saved


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
    through a row would keep it (and its variables) until a full collection, which now comes
    once a minute."""
    events = _capture_events(capture)
    table = ChannelTable(tombstone_ttl=0.0)
    gc.collect()
    gc.disable()
    try:
        for event, body in events:
            table.apply("fs1", event, body)
        for event, body in events:  # and once more: late events for the tombstoned
            table.apply("fs1", event, body)
        table.expire_tombstones()
        live = {id(ch) for ch in table.all()}
        left = [o for o in gc.get_objects() if isinstance(o, Channel) and id(o) not in live]
    finally:
        gc.enable()
    assert left == [], f"{len(left)} ended rows kept alive by a reference cycle"
    assert len(table) == len(live)
