"""channel_events written by the publisher: a caught-up subscriber's greenlet is not woken to
write each batch (feeds.Feed.push, httpserver.Pusher), over real sockets.

What must hold whoever writes: every subscriber gets every frame of its feed once, in order,
framed exactly (chunked for HTTP/1.1, raw for HTTP/1.0), also when its socket takes only part
of a batch and the rest must wait for it to read."""

import json
import random
from typing import Any

import gevent
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sse_support import WireReader, short_sends

from conftest import Harness, calls_until, wait_until

ACC1 = {"account_id": "acc1", "owner_id": "user1"}


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """How often a subscriber's greenlet was woken from its wait as a parked subscriber, and
    how the publisher's pushes went."""
    import channelsd.stream as stream
    from channelsd.httpserver import Pusher

    counts = {"woken": 0, "pushed": 0}
    real_parked, real_push = stream._parked, Pusher.push

    def parked(*args: Any) -> Any:
        result = real_parked(*args)
        counts["woken"] += 1
        return result

    def push(self: Pusher, data: bytes, chunk: bytes) -> bytes:
        counts["pushed"] += 1
        return real_push(self, data, chunk)

    monkeypatch.setattr(stream, "_parked", parked)
    monkeypatch.setattr(Pusher, "push", push)
    counts["partial"] = short_sends(monkeypatch)  # (a list: one entry each)
    return counts


def ids(frames: list[tuple[str, str, Any]]) -> list[int]:
    return [int(i.rsplit("-", 1)[1]) for i, _, _ in frames]


def after_snapshot(r: WireReader) -> list[tuple[str, str, str]]:
    frames = r.frames()
    assert frames[0][1] == "snapshot"
    return [(i, e, json.dumps(d, sort_keys=True)) for i, e, d in frames[1:]]


def test_caught_up_subscribers_are_written_without_being_woken(
    daemon: Harness, switch: Any, readers: Any, counted: dict[str, Any]
) -> None:
    crowd = [readers(daemon) for _ in range(12)]
    old = readers(daemon, version="1.0")  # no chunked framing: the push writes bytes as such
    everyone = [*crowd, old]
    wait_until(lambda: all(r.frames() for r in everyone), what="the snapshots")
    feed = next(iter(daemon.daemon.ctx.broker.feeds.values()))
    wait_until(lambda: len(feed.parked) == len(everyone), what="every subscriber parked")
    calls = []
    for _ in range(8):
        calls.append(switch.bridged_call(variables_a=ACC1, variables_b=ACC1)[0])
        gevent.sleep(0.15)  # a publish each (PUBLISH_INTERVAL is 0.1 s)
    switch.hangup(calls[0])
    for r in everyone:
        wait_until(
            lambda r=r: any(e == "destroy" and d["uuid"] == calls[0] for _, e, d in r.frames()),
            what="the last change on every stream",
        )
    # Every batch reached all of them by push: not one greenlet was woken to write it.
    assert counted["woken"] == 0
    assert counted["pushed"] >= 8 * len(everyone)
    reference = after_snapshot(crowd[0])
    assert {c for _, e, d in reference if e == "create" for c in [json.loads(d)["uuid"]]} >= set(
        calls
    )
    for r in everyone:
        assert after_snapshot(r) == reference
        assert ids(r.frames()[1:]) == sorted(set(ids(r.frames()[1:])))


def test_a_socket_that_takes_part_of_a_batch_gets_the_rest_in_order(
    daemon: Harness, switch: Any, readers: Any, counted: dict[str, Any]
) -> None:
    fast = readers(daemon)
    slow = readers(daemon, rcvbuf=4096)
    wait_until(lambda: fast.frames() and slow.frames(), what="the snapshots")
    feed = next(iter(daemon.daemon.ctx.broker.feeds.values()))
    wait_until(lambda: len(feed.parked) == 2, what="both parked")
    slow.paused = True
    last = calls_until(daemon, switch, lambda: counted["partial"], ACC1)[-1]
    slow.paused = False
    for r in (fast, slow):
        wait_until(
            lambda r=r: any(e == "create" and d["uuid"] == last for _, e, d in r.frames()),
            what="the last call on both streams",
            timeout=20,
        )
    assert after_snapshot(slow) == after_snapshot(fast)
    # and, caught up again, the slow one is written by the publisher once more
    wait_until(lambda: len(feed.parked) == 2, what="both parked again")


def test_a_subscriber_that_leaves_while_parked_is_let_go(
    daemon: Harness, switch: Any, readers: Any
) -> None:
    r = readers(daemon)
    wait_until(r.frames, what="the snapshot")
    broker = daemon.daemon.ctx.broker
    feed = next(iter(broker.feeds.values()))
    wait_until(lambda: len(feed.parked) == 1, what="parked")
    r.close()
    wait_until(lambda: broker.subscribers == 0 and not broker.feeds, what="the stream ended")
    assert not feed.parked
    switch.bridged_call(variables_a=ACC1, variables_b=ACC1)  # a publish with nobody: no error
    gevent.sleep(0.2)
    assert len(daemon.daemon.ctx.subscriptions) == 0


@settings(
    max_examples=6,
    deadline=None,
    phases=[Phase.generate],  # a seed has nothing to shrink: its failure is reported as is
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32 - 1))
def test_any_mix_of_readers_and_pauses_gets_the_same_stream(
    daemon: Harness, switch: Any, seed: int
) -> None:
    """Readers with small and large socket buffers, HTTP/1.0 and 1.1, pausing at random
    while calls come and go: once all read again, each holds the same frames after its
    snapshot as a reader that never paused, from its first frame on."""
    rng = random.Random(seed)
    made = []
    try:
        reference = WireReader(daemon)
        made.append(reference)
        wait_until(reference.frames, what="the reference's snapshot")
        for _ in range(5):
            r = WireReader(
                daemon,
                version=rng.choice(["1.0", "1.1"]),
                rcvbuf=rng.choice([None, 4096, 16384]),
            )
            made.append(r)
        wait_until(lambda: all(r.frames() for r in made), what="the snapshots")
        live: list[str] = []
        for _ in range(rng.randint(3, 8)):
            for r in made[1:]:
                r.paused = rng.random() < 0.4
            for _ in range(rng.randint(1, 30)):
                if live and rng.random() < 0.3:
                    switch.hangup(live.pop(rng.randrange(len(live))))
                else:
                    live.append(switch.bridged_call(variables_a=ACC1, variables_b=ACC1)[0])
            gevent.sleep(rng.choice([0.0, 0.05, 0.15]))
        for r in made:
            r.paused = False
        marker = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)[0]
        for r in made:
            wait_until(
                lambda r=r: any(e == "create" and d["uuid"] == marker for _, e, d in r.frames()),
                what="the marker call on every stream",
                timeout=20,
            )
        want = after_snapshot(reference)
        for r in made[1:]:
            got = after_snapshot(r)
            first = got[0][0] if got else None
            start = next((i for i, f in enumerate(want) if f[0] == first), len(want))
            # (a reader may have subscribed after the reference saw its first changes)
            assert got == want[start:]
    finally:
        for r in made:
            r.close()
        for uuid in list(switch.channels):
            ch = switch.channels.get(uuid)  # (a call's other leg goes with it)
            if ch is not None and ch.alive:
                switch.hangup(uuid)


def test_a_subscriber_leaving_wakes_no_one_else(
    daemon: Harness, switch: Any, readers: Any, counted: dict[str, Any]
) -> None:
    """Its subscription's end wakes it alone: a crowd's churn (dashboards come and go all day)
    must not wake the whole crowd each time (found by the outside attack)."""
    crowd = [readers(daemon) for _ in range(10)]
    wait_until(lambda: all(r.frames() for r in crowd), what="the snapshots")
    broker = daemon.daemon.ctx.broker
    feed = next(iter(broker.feeds.values()))
    wait_until(lambda: len(feed.parked) == len(crowd), what="every subscriber parked")
    leaving = crowd.pop()
    leaving.close()
    wait_until(lambda: broker.subscribers == len(crowd), what="its stream ended")
    assert counted["woken"] == 1  # the one that left, and no one else
    assert len(feed.parked) == len(crowd)
    a, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    for r in crowd:
        wait_until(
            lambda r=r: any(e == "create" and d["uuid"] == a for _, e, d in r.frames()),
            what="the next call on every stream",
        )
    assert counted["woken"] == 1
