"""channelsd.cadence attacked from outside: one publish at a time per publisher, but the
websocket Hub and the SSE Broker share the daemon's one Courier (channelsd.sendmany).

Courier.__call__ carried the queue until it was empty, in the greenlet of whichever publish
found it idle; a publish that found it busy only queued and returned. So while the other
publisher kept publishing (a switch's steady stream of events) and each carry took as long
as an interval (the courier's thread is niced +10: on a machine short of CPU a carry takes
"a publish or two"), the carrier's publish never returned: its Cadence stayed `_running`,
and every change noted to that publisher waited (`_again`) until the other one went quiet.
Now each call waits for the publish on its way and sends only its own.

The sends are held at gates (test_sendmany.Gate), one per publisher: what each publish does
while the other's is out is seen without timing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gevent
from kazoo_support import WsClient
from test_sendmany import Gate, Owner, drain, socket_pairs
from test_stream_courier import parked_pusher
from test_websocket import ACC1, ACC2, call_ids, ws_url

from channelsd.sendmany import Courier

from conftest import Harness, token, wait_until


def test_a_publish_returns_once_its_own_is_sent_not_the_ones_queued_behind_it() -> None:
    """Two publishers share the courier: B's publish is out, A's waits for it. Once B's send
    lands, B's call returns, while A's is still out: B's publisher may publish again."""
    a_gate, b_gate = Gate(), Gate()
    with socket_pairs(2) as ((a_in, a_out), (b_in, b_out)):

        def send(fds: Sequence[int], datas: Sequence[bytes]) -> list[int]:
            return (a_gate if a_in.fileno() in fds else b_gate)(fds, datas)

        courier = Courier(thread_bytes=1, send=send)
        a, b = Owner(a_in), Owner(b_in)
        try:
            b_call = gevent.spawn(courier, [(b, b"b")])
            wait_until(lambda: b.in_flight, what="B's publish out")
            a_call = gevent.spawn(courier, [(a, b"a")])
            wait_until(lambda: courier.waiting == 1, what="A's publish waiting for B's")
            b_gate.open()
            wait_until(lambda: b_call.dead, what="B's call returned, A's still held")
            assert b.told == [(b"b", 1)] and drain(b_out) == b"b"
            wait_until(lambda: a.in_flight, what="A's publish out, in its own call")
            assert not a_call.dead
            a_gate.open()
            gevent.joinall([a_call, b_call], raise_error=True)
            assert a.told == [(b"a", 1)] and drain(a_out) == b"a"
        finally:
            courier.close()


def test_an_event_streams_publish_ends_while_a_websockets_is_out(
    switch: Any, make_daemon: Any, readers: Any
) -> None:
    """The same over real sockets: an event stream on acc1, a websocket on acc2. The stream's
    publish is out; the websocket's waits for it, then goes out and is held. The broker's
    publish has ended meanwhile (before the fix it carried the hub's, and stayed `_running`
    as long as the hub kept publishing)."""
    h: Harness = make_daemon([switch])
    courier = h.daemon.courier
    broker = h.daemon.ctx.broker
    c = WsClient(ws_url(h))
    try:
        assert c.subscribe(token("admin2"), "acc2", "call.CHANNEL_CREATE.*")["status"] == (
            "success"
        )
        (session,) = h.daemon.ctx.websockets.sessions
        r = readers(h)
        wait_until(r.frames, what="the snapshot")
        pusher = parked_pusher(h)
        ws_gate, sse_gate = Gate(), Gate()

        def send(fds: Sequence[int], datas: Sequence[bytes]) -> list[int]:
            return (ws_gate if session._line.fd in fds else sse_gate)(fds, datas)

        courier.thread_bytes = 1
        courier._send = send
        on_stream, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
        wait_until(lambda: pusher._line.in_flight is not None, what="the stream's push out")
        on_socket, _ = switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
        wait_until(lambda: courier.waiting == 1, what="the websocket's publish waiting")
        sse_gate.open()
        wait_until(lambda: session._line.in_flight is not None, what="the websocket's out")
        assert not broker._cadence._running, "the broker's publish carries the hub's"
        wait_until(
            lambda: on_stream in {d["uuid"] for _, e, d in r.frames() if e == "create"},
            what="the call on the stream",
        )
        ws_gate.open()
        wait_until(lambda: on_socket in call_ids(c), what="the call on the websocket")
    finally:
        c.close()
