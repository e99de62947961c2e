"""channel_events through the daemon's courier (channelsd.sendmany), attacked from outside:
publishes that overlap (a publish paused in Feed.push's turns while the next one runs), over
real sockets."""

from __future__ import annotations

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


def test_a_publish_paused_in_its_turns_is_not_overtaken_by_the_next(
    daemon: Harness, switch: Any, readers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feed.push pauses between subscribers (turns.pause, every PUSH_TURN) before it hands its
    pairs to the courier. Found by an outside attack: the broker's next publish (its timer
    was re-armed as soon as a publish started) ran meanwhile and handed a later piece over
    first; Pusher.claim refused it (not the head of `_owed`) and nobody was woken, so it
    reached the client only at the keepalive (15 s), and every publish after it too. Now the
    next publish waits for the one on its way (channelsd.cadence), and a claim refused with
    pieces still owed wakes the stream's greenlet (test_stream_courier)."""
    r = readers(daemon)
    wait_until(r.frames, what="the snapshot")
    parked_pusher(daemon)
    # One subscriber stands for the 256th of a crowd: the pause comes right after it.
    monkeypatch.setattr(feeds, "PUSH_TURN", 1)
    paused, go = gevent.event.Event(), gevent.event.Event()
    first = [True]

    def pause() -> None:
        if first[0]:  # the first publish's turn lasts while the next call is made
            first[0] = False
            paused.set()
            go.wait(10)

    monkeypatch.setattr(feeds, "turns", SimpleNamespace(pause=pause))
    broker = daemon.daemon.ctx.broker
    (feed,) = broker.feeds.values()
    call1, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    assert paused.wait(5), "the first publish never paused in Feed.push"
    first_last = feed.last
    call2, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    wait_until(lambda: broker._cadence._again, what="the second call noted during the pause")
    gevent.sleep(0.3)  # (three intervals: an overtaking publish would have run)
    assert feed.last == first_last, "a publish ran while the one before it was paused"
    go.set()
    wait_until(lambda: {call1, call2} <= _created(r), what="both calls on the stream")
    ids = [int(i.rsplit("-", 1)[1]) for i, _, _ in r.frames()[1:]]
    assert ids == sorted(set(ids))
