"""channelsd.cadence attacked from outside: one publish at a time per publisher, but the
websocket Hub and the SSE Broker share the daemon's one Courier (channelsd.sendmany).

Courier.__call__ carried the queue until it was empty, in the greenlet of whichever publish
found it idle; a publish that found it busy only queued and returned. So while the other
publisher kept publishing (a switch's steady stream of events) and each carry took as long
as an interval (the courier's thread is niced +10: on a machine short of CPU a carry takes
"a publish or two"), the carrier's publish never returned: its Cadence stayed `_running`,
and every change noted to that publisher waited (`_again`) until the other one went quiet.
Now each call waits for the publish on its way and sends only its own.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Sequence
from typing import Any

import gevent
from gevent.monkey import get_original
from kazoo_support import WsClient
from test_stream_courier import parked_pusher
from test_websocket import ACC1, ws_url

from channelsd.cadence import Cadence
from channelsd.sendmany import Courier, send_each_python

from conftest import Harness, token, wait_until

_sleep = get_original("time", "sleep")  # the courier's native thread's own


def slow_send(seconds: float) -> Any:
    """send_each, taking `seconds` in the courier's thread (a niced thread on a busy box, or
    a large crowd's bytes)."""

    def send(fds: Sequence[int], datas: Sequence[bytes]) -> list[int]:
        _sleep(seconds)
        return send_each_python(fds, datas)

    return send


class Sock:
    """An addressee that always lets the courier write (a caught-up subscriber)."""

    def __init__(self) -> None:
        self.r, self.w = socket.socketpair()
        self.w.setblocking(False)
        self.got = 0

    def claim(self, data: bytes) -> int:
        return self.w.fileno()

    def sent(self, data: bytes, n: int) -> None:
        self.got += 1
        with contextlib.suppress(OSError):
            self.r.recv(65536)

    def close(self) -> None:
        self.r.close()
        self.w.close()


def test_a_publisher_whose_publish_carries_the_others_sends_is_starved() -> None:
    """Real Cadence and Courier, two publishers sharing the courier (the daemon's Hub and
    Broker). B publishes first and so carries; A keeps publishing every interval. B's second
    change must go out within a few intervals: it waits instead for as long as A publishes
    (B's publish is still 'on its way', carrying A's pairs)."""
    courier = Courier(thread_bytes=0, send=slow_send(0.12))  # each carry > the interval
    a_sock, b_sock = Sock(), Sock()
    b_published: list[float] = []

    def publish_a() -> None:
        courier([(a_sock, b"a")])

    def publish_b() -> None:
        b_published.append(time.monotonic())
        courier([(b_sock, b"b")])

    a, b = Cadence(0.1, publish_a), Cadence(0.1, publish_b)
    try:
        b.noted()  # B's timer first: its publish finds the courier idle and carries
        gevent.sleep(0.01)
        a.noted()
        wait_until(lambda: b_published, what="B's first publish")
        gevent.sleep(0.05)
        noted_at = time.monotonic()
        b.noted()  # B's second change
        # A hostile switch's steady stream for the websocket hub: a change every 30 ms.
        deadline = noted_at + 2.0
        while time.monotonic() < deadline and len(b_published) < 2:
            a.noted()
            gevent.sleep(0.03)
        latency = (b_published[1] - noted_at) if len(b_published) > 1 else None
        assert latency is not None and latency < 1.0, (
            f"B's change waited {latency or '>2'} s: its publish ({b._running=}, "
            f"{b._again=}) was carrying A's sends, queue {courier.waiting}"
        )
    finally:
        a.close()
        b.close()
        courier.close()
        a_sock.close()
        b_sock.close()


def test_an_event_stream_is_not_starved_by_a_websocket_crowds_steady_publishes(
    switch: Any, make_daemon: Any, readers: Any
) -> None:
    """The same over real sockets: a websocket subscriber and an event stream on acc1, the
    daemon's courier slowed to a carry of 0.15 s (above the 0.1 s interval). The switch keeps
    making calls; each publisher must get every call out within a second or so of the call.
    Whichever publisher's publish became the carrier gets nothing more out while the other
    keeps publishing."""
    h: Harness = make_daemon([switch])
    courier = h.daemon.courier
    c = WsClient(ws_url(h))
    try:
        assert c.subscribe(token("admin1"), "acc1", "call.CHANNEL_CREATE.*")["status"] == (
            "success"
        )
        r = readers(h)
        wait_until(r.frames, what="the snapshot")
        parked_pusher(h)
        courier.thread_bytes = 0
        courier._send = slow_send(0.15)
        calls: list[tuple[float, str]] = []
        late: list[str] = []
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            uuid, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
            calls.append((time.monotonic(), uuid))
            gevent.sleep(0.04)
            # Every call older than 1.5 s must be on both by now.
            now = time.monotonic()
            ws = {m["data"].get("call_id") for m in c.messages if m.get("name")}
            sse = {d["uuid"] for _, e, d in r.frames() if e == "create"}
            for at, call in calls:
                if now - at > 1.5:
                    if call not in ws:
                        late.append(f"websocket {call} after {now - at:.1f}s")
                    if call not in sse:
                        late.append(f"event stream {call} after {now - at:.1f}s")
            if late:
                break
        assert not late, (
            f"{late[:2]} (broker running={h.daemon.ctx.broker._cadence._running}, hub "
            f"running={h.daemon.ctx.websockets.hub._cadence._running}, courier queue "
            f"{courier.waiting})"
        )
    finally:
        c.close()
