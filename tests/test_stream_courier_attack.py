"""channel_events through the daemon's courier (channelsd.sendmany), attacked from outside:
publishes that overlap (a publish paused in Feed.push's turns while the next one runs), over
real sockets."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import gevent
import gevent.event
import pytest
from test_stream_courier import parked_pusher
from test_stream_push_attack import ACC1

from channelsd import feeds

from conftest import Harness, wait_until


def _created(r: Any) -> set[str]:
    return {d["uuid"] for _, e, d in r.frames() if e == "create"}


def test_a_publish_handed_over_before_an_earlier_one_still_reaches_the_stream(
    daemon: Harness, switch: Any, readers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feed.push pauses between subscribers (turns.pause, every PUSH_TURN) before it hands its
    pairs to the courier; the broker's next publish (its timer is re-armed as soon as a
    publish starts) runs meanwhile and hands a later piece for a subscriber already given the
    earlier one. The courier carries the later publish first: Pusher.claim refuses it (not
    the head of `_owed`) and Parked.claim wakes nobody (owes() looks at the head only). Once
    the earlier piece is carried, the later one stays owed with the subscriber parked: it
    reaches the client only at the keepalive (15 s), and every publish after it too."""
    r = readers(daemon)
    wait_until(r.frames, what="the snapshot")
    pusher = parked_pusher(daemon)
    # One subscriber stands for the 256th of a crowd: the pause comes right after it.
    monkeypatch.setattr(feeds, "PUSH_TURN", 1)
    paused, go = gevent.event.Event(), gevent.event.Event()
    first = [True]

    def pause() -> None:
        if first[0]:  # the first publish's turn lasts while the next publish runs
            first[0] = False
            paused.set()
            go.wait(10)

    monkeypatch.setattr(feeds, "turns", SimpleNamespace(pause=pause))
    (feed,) = daemon.daemon.ctx.broker.feeds.values()
    call1, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    assert paused.wait(5), "the first publish never paused in Feed.push"
    first_last = feed.last
    call2, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    wait_until(lambda: feed.last > first_last, what="the second publish, during the pause")
    gevent.sleep(0.2)  # (its courier call done: a small publish goes from the hub at once)
    go.set()
    wait_until(lambda: call1 in _created(r), what="the first call")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and call2 not in _created(r):
        gevent.sleep(0.05)
    assert call2 in _created(r), (
        f"the second call's create is still owed ({len(pusher._owed)} piece(s)), the stream "
        "parked: it would go out at the keepalive"
    )
