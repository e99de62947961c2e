"""One publish at a time (channelsd.cadence): a publish that visits the hub (a reconcile's
slices, a crowd's turns, the courier's thread) is never overtaken by the next one, for the
websocket hub and the event-stream broker alike, over real sockets.

Before the fix each publisher re-armed its timer as soon as a publish began: the next
publish ran during one of its visits to the hub and handed its later events over first."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gevent
import gevent.event
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kazoo_support import WsClient
from test_websocket import ACC1, ws_url

from channelsd import stream
from channelsd.blackhole import hub as hub_module
from channelsd.cadence import Cadence

from conftest import Harness, token, wait_until


class SlowSlices:
    """`in_slices` of a publisher's module, one item a slice, the first publish held before
    its second slice until `go` (a reconcile's slices, each a visit to the hub)."""

    def __init__(self) -> None:
        self.held = gevent.event.Event()
        self.go = gevent.event.Event()
        self._first = True

    def __call__(self, items: list[Any]) -> Iterator[list[Any]]:
        hold, self._first = self._first, False
        for i, item in enumerate(items):
            if i == 1 and hold:
                self.held.set()
                assert self.go.wait(10)
            yield [item]


def test_a_websocket_gets_a_calls_events_in_order_when_a_publish_takes_long(
    switch: Any, make_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Harness = make_daemon([switch])
    c = WsClient(ws_url(h))
    try:
        assert c.subscribe(token("admin1"), "acc1", "call.*.*")["status"] == "success"
        slices = SlowSlices()
        monkeypatch.setattr(hub_module, "in_slices", slices)
        a, b = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)  # creates, answers
        assert slices.held.wait(5), "the first publish never reached its second slice"
        switch.hangup(a)  # both legs' destroys: noted while the first publish is held
        # Overtaken, the destroys would reach the client now: given a second to show it.
        wait_until(
            lambda: "CHANNEL_DESTROY" in names(c) or h.daemon.ctx.websockets.hub._cadence._again,
            what="the hangup noted",
        )
        # Nothing is armed while the held publish runs (seen at once, whatever the timing),
        # and several intervals on, nothing overtook it.
        assert h.daemon.ctx.websockets.hub._cadence._timer is None
        gevent.sleep(0.5)  # (several intervals: a second publish would have run)
        assert "CHANNEL_DESTROY" not in names(c), "a later publish overtook the one held"
        slices.go.set()
        wait_until(lambda: names(c).count("CHANNEL_DESTROY") == 2, what="both destroys")
        for leg in (a, b):
            mine = [m["name"] for m in c.messages if m.get("data", {}).get("call_id") == leg]
            assert mine[0] == "CHANNEL_CREATE" and mine[-1] == "CHANNEL_DESTROY", mine
    finally:
        c.close()


def names(c: WsClient) -> list[str]:
    return [m["name"] for m in c.messages if m.get("name")]


def test_an_event_stream_never_gets_a_hung_up_channel_back_when_a_publish_takes_long(
    daemon: Harness, switch: Any, readers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The held publish's second slice renders a channel as it was when that publish began;
    overtaken by the next one, which told its destroy, it told it again afterwards: a ghost
    on the client's screen until the next snapshot."""
    r = readers(daemon)
    wait_until(r.frames, what="the snapshot")
    a, b = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    wait_until(lambda: {a, b} <= live(r), what="the call on the stream")
    slices = SlowSlices()
    monkeypatch.setattr(stream, "in_slices", slices)
    switch.hold(b)  # first in the next publish's slices
    switch.hold(a)  # second: held back
    assert slices.held.wait(5), "the publish never reached its second slice"
    switch.hangup(a)
    cadence = daemon.daemon.ctx.broker._cadence
    wait_until(lambda: cadence._again, what="the hangup noted while the publish is held")
    assert cadence._timer is None  # nothing armed to overtake it
    gevent.sleep(0.5)  # (several intervals: a second publish would have run)
    slices.go.set()
    wait_until(lambda: not ({a, b} & live(r)), what="the call gone from the stream")
    ids = [int(i.rsplit("-", 1)[1]) for i, _, _ in r.frames()[1:]]
    assert ids == sorted(set(ids))
    gevent.sleep(0.3)  # (a publish more: nothing brings them back)
    assert not ({a, b} & live(r)), "a hung-up channel came back"


def live(r: Any) -> set[str]:
    """The channels a client holds after applying the stream's frames in order."""
    held: set[str] = set()
    for _, event, data in r.frames():
        if event == "snapshot":
            held = {item["uuid"] for item in data}
        elif event in ("create", "update"):
            held.add(data["uuid"])
        elif event == "destroy":
            held.discard(data["uuid"])
    return held


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.sampled_from(["note", "run", "sleep", "slow"]), max_size=25))
def test_never_two_publishes_at_once_and_nothing_noted_is_left(steps: list[str]) -> None:
    """Any order of changes noted, early publishes, time passing and slow publishes: never
    two at once, and a change noted is published by a publish that began after it."""
    log: list[tuple[str, int]] = []
    running = [0]
    noted: list[int] = []  # changes not yet taken by a publish
    taken: list[int] = []
    slow = [False]

    def publish() -> None:
        running[0] += 1
        assert running[0] == 1, "two publishes at once"
        taken.extend(noted)
        noted.clear()
        if slow[0]:
            gevent.sleep(0.03)  # a visit to the hub: changes may be noted meanwhile
        running[0] -= 1
        log.append(("published", len(taken)))

    cadence = Cadence(0.01, publish)
    count = 0
    for step in steps:
        if step == "note":
            count += 1
            noted.append(count)
            cadence.noted()
        elif step == "run":
            gevent.spawn(cadence.run)
        elif step == "slow":
            slow[0] = not slow[0]
        gevent.sleep(0.005 if step == "sleep" else 0)
    wait_until(lambda: not cadence.armed, what="the last publish")
    assert not noted and sorted(taken) == list(range(1, count + 1))
    cadence.close()
