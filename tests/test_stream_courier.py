"""channel_events written by the daemon's courier (channelsd.sendmany) from its native thread:
what a stream's own greenlet does while a push is out, and the descriptor the thread writes to
(httpserver.Pusher's claim/sent), over real sockets. The thread's send is held at a gate
(test_sendmany.Gate), so what happens while it is out is seen without timing it."""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Sequence
from typing import Any

import gevent
import pytest
from sse_support import short_sends
from test_sendmany import Gate, c_send_each, same_file
from test_stream_push_attack import (
    ACC1,
    frame_ids,
    recv_for,
    revoke,
    stream_request,
    unchunk,
)

from channelsd import sendmany
from channelsd.feeds import Parked
from channelsd.httpserver import Pusher
from channelsd.sendmany import SendEach

from conftest import Harness, wait_until


def through(h: Harness, send: SendEach) -> None:
    """Every push of the daemon's feeds goes through `send`, in the courier's thread."""
    h.daemon.courier.thread_bytes = 1
    h.daemon.courier._send = send


def parked_pusher(h: Harness) -> Pusher:
    broker = h.daemon.ctx.broker
    wait_until(
        lambda: broker.feeds and next(iter(broker.feeds.values())).parked, what="a parked stream"
    )
    (parked,) = next(iter(broker.feeds.values())).parked
    return parked.pusher


def creates(body: bytes) -> list[str]:
    out = []
    for block in body.decode().split("\n\n")[:-1]:
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if fields.get("event") == "create":
            out.append(json.loads(fields["data"])["uuid"])
    return out


def test_a_stream_revoked_while_its_push_is_out_ends_after_it(daemon: Harness, switch: Any) -> None:
    """Its greenlet, woken by the revocation, writes nothing until the thread's send has
    landed: then the stream's last chunk, then the next answer on the connection."""
    gate = Gate()
    through(daemon, gate)
    sock = socket.create_connection(daemon.daemon.http_address, timeout=10)
    try:
        sock.sendall(stream_request())
        got, _ = recv_for(sock, 5, until=b"event: snapshot")
        pusher = parked_pusher(daemon)
        call, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
        wait_until(lambda: pusher._line.in_flight is not None, what="a push in the thread")
        assert revoke(daemon) == 1
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # pipelined after the stream
        wait_until(lambda: pusher._landed is not None, what="the greenlet waiting for the push")
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(65536)  # nothing was written meanwhile: not the last chunk, no answer
        sock.setblocking(True)
        gate.open()
        while b'"loop_lag_seconds"' not in got:
            more, closed = recv_for(sock, 5, until=b'"loop_lag_seconds"')
            got += more
            assert more and not closed, got[-300:]
        head, raw = got.split(b"\r\n\r\n", 1)
        body, rest = unchunk(raw)
        assert call in creates(body)  # the push that was out, before the stream's end
        ids = frame_ids(body)
        assert ids == sorted(set(ids))
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n") and b'"status":"ok"' in rest
    finally:
        sock.close()


def test_what_the_thread_could_not_send_the_greenlet_writes_in_order(
    daemon: Harness, switch: Any, readers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every send of the thread takes half of its piece: each stream's greenlet writes the
    rest, before the next push goes out. Every stream gets every frame once, in order."""

    def half(fds: Sequence[int], datas: Sequence[bytes]) -> list[int]:
        return c_send_each(fds, [d[: len(d) // 2] for d in datas])

    gate = Gate(half)
    gate.open()
    through(daemon, gate)
    short = short_sends(monkeypatch)
    crowd = [readers(daemon) for _ in range(4)]
    wait_until(lambda: all(r.frames() for r in crowd), what="the snapshots")
    calls = []
    for _ in range(6):
        calls += [switch.bridged_call(variables_a=ACC1, variables_b=ACC1)[0] for _ in range(3)]
        gevent.sleep(0.15)  # a publish each
    for r in crowd:
        wait_until(
            lambda r=r: set(calls) <= {d["uuid"] for _, e, d in r.frames() if e == "create"},
            what="every call on every stream",
        )
    assert short, "no send was left short: the greenlet's part was not exercised"
    reference = [(i, e, d) for i, e, d in crowd[0].frames()[1:]]
    for r in crowd:
        frames = r.frames()[1:]
        assert frames == reference
        numbers = [int(i.rsplit("-", 1)[1]) for i, _, _ in frames]
        assert numbers == sorted(set(numbers))


def test_a_stop_while_a_push_is_out_closes_the_descriptor_once_it_landed(
    switch: Any, make_daemon: Any, readers: Any
) -> None:
    h: Harness = make_daemon([switch])
    gate = Gate()
    through(h, gate)
    r = readers(h)
    wait_until(r.frames, what="the snapshot")
    pusher = parked_pusher(h)
    call, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    wait_until(lambda: pusher._line.in_flight is not None, what="a push in the thread")
    fd = pusher._line.fd
    inode = os.fstat(fd).st_ino

    def open_once_stopping() -> None:
        wait_until(lambda: h.daemon.ctx.broker.closed, what="the stop")
        gate.open()

    opener = gevent.spawn(open_once_stopping)
    h.daemon.stop()
    opener.get()
    wait_until(lambda: pusher._line.in_flight is None, timeout=5, what="the thread's answer")
    wait_until(lambda: not same_file(fd, inode), what="the descriptor closed")
    assert h.daemon.courier._pool is None
    wait_until(lambda: h.daemon.ctx.broker.subscribers == 0, what="the stream's end")
    wait_until(
        lambda: call in {d["uuid"] for _, e, d in r.frames() if e == "create"},
        what="the push that was out, at the client",
    )


def test_a_stop_while_the_couriers_thread_starts_ends_the_stream_with_the_push(
    switch: Any, make_daemon: Any, readers: Any, held_start: Any
) -> None:
    """The daemon's first push is out while the courier's thread starts, and the daemon
    stops: the push goes from the hub, the stream ends and leaves nothing claimed. Failed
    before the fix (a CI run, once): the stream's greenlet waited for ever for a push the
    courier had lost, and kept its connection's handler alive."""
    h: Harness = make_daemon([switch])
    h.daemon.courier.thread_bytes = 1
    r = readers(h)
    wait_until(r.frames, what="the snapshot")
    pusher = parked_pusher(h)
    call, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    wait_until(lambda: pusher._line.in_flight is not None, what="the push claimed")

    def start_once_stopping() -> None:
        wait_until(lambda: h.daemon.ctx.broker.closed, what="the stop")
        held_start()

    starter = gevent.spawn(start_once_stopping)
    h.daemon.stop()
    starter.get()
    wait_until(lambda: pusher._line.in_flight is None, what="the push landed")
    assert h.daemon.courier.threaded == 0 and h.daemon.courier._pool is None
    wait_until(lambda: h.daemon.ctx.broker.subscribers == 0, what="the stream's end")
    wait_until(
        lambda: call in {d["uuid"] for _, e, d in r.frames() if e == "create"},
        what="the push, at the client",
    )


class _Handler:
    """What a Pusher reads of its connection's handler."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.headers_sent = True
        self.response_use_chunked = False
        self.unsent = b""
        self.response_length = 0


def test_an_answer_that_ends_while_its_push_is_out_keeps_the_descriptor_until_it_lands() -> None:
    """Closed under the thread's send, the descriptor's number could be given to the next
    client's socket, and the push would go to that client."""
    a, b = socket.socketpair()
    try:
        pusher = Pusher(_Handler(a))  # type: ignore[arg-type]
        piece = pusher.push(b"data", b"4\r\ndata\r\n")
        assert piece == b"data"  # (no chunked framing: the bytes as such)
        fd = pusher.claim(piece)
        assert fd is not None and fd != a.fileno()
        inode = os.fstat(fd).st_ino
        assert pusher.let_go() is True  # a send is out: the connection carries no other answer
        assert same_file(fd, inode)
        os.write(fd, piece)
        assert pusher.sent(piece, len(piece)) is True
        # (gevent's os.close closes at the loop's next turn)
        wait_until(lambda: not same_file(fd, inode), what="the descriptor closed")
        assert b.recv(10) == b"data"
    finally:
        a.close()
        b.close()


def test_a_piece_its_greenlet_wrote_first_is_not_claimed_again() -> None:
    """A push queued behind another in the courier may be written by the stream's greenlet
    before the courier comes to it (woken meanwhile): the courier then leaves it."""
    a, b = socket.socketpair()
    try:
        handler = _Handler(a)
        pusher = Pusher(handler)  # type: ignore[arg-type]
        first = pusher.push(b"one", b"")
        second = pusher.push(b"two", b"")
        pusher.settle()  # the greenlet takes both as its own to write
        assert handler.unsent == b"onetwo"
        handler.unsent = b""  # and has written them
        assert pusher.claim(first) is None and pusher.claim(second) is None
        assert not pusher.owing
        pusher.let_go()
    finally:
        a.close()
        b.close()


def test_out_of_descriptors_the_greenlet_writes_every_push(
    daemon: Harness, switch: Any, readers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_descriptor(_fd: int) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(sendmany, "_dup", no_descriptor)
    through(daemon, c_send_each)
    r = readers(daemon)
    wait_until(r.frames, what="the snapshot")
    calls = []
    for _ in range(4):
        calls.append(switch.bridged_call(variables_a=ACC1, variables_b=ACC1)[0])
        gevent.sleep(0.15)
    wait_until(
        lambda: set(calls) <= {d["uuid"] for _, e, d in r.frames() if e == "create"},
        what="every call",
    )
    (feed,) = daemon.daemon.ctx.broker.feeds.values()
    wait_until(lambda: feed.parked, what="parked again")
    (parked,) = feed.parked
    assert parked.pusher._line.fd == -2  # it asked once, and writes for itself since
    assert daemon.daemon.courier.threaded == 0


def test_a_claim_refused_while_an_earlier_piece_is_owed_wakes_the_stream() -> None:
    """Pieces handed over out of order (the later one claimed first) are its greenlet's to
    write, in order: woken, not left owed until the keepalive (found by an outside attack)."""
    a, b = socket.socketpair()
    try:
        parked = Parked(Pusher(_Handler(a)))  # type: ignore[arg-type]
        earlier = parked.pusher.push(b"one", b"")
        later = parked.pusher.push(b"two", b"")
        assert parked.claim(later) is None
        assert parked.woken.is_set()
        parked.pusher.settle()
        assert parked.pusher._handler.unsent == b"onetwo"
        assert parked.claim(earlier) is None  # taken by the greenlet: the courier leaves it
        parked.pusher.let_go()
    finally:
        a.close()
        b.close()
