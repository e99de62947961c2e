"""channel_events written by the publisher, attacked from outside (found by an outside attack).

A hostile tenant and a hostile network against the parked subscribers of feeds.Feed.push and
httpserver.Pusher, over real sockets: revocations that land while a subscriber writes for
itself, clients that stop reading and vanish with a push's rest pending, keep-alive and
pipelined requests after a stream, HEAD, HTTP/1.0 keep-alive, a crowd that comes and goes
while batches are pushed in turns, and what a closed stream leaves for the collector.
"""

from __future__ import annotations

import gc
import json
import random
import socket
import struct
import time
from typing import Any

import gevent
import pytest
from sse_support import WireReader, short_sends

from channelsd.feeds import Parked
from channelsd.httpserver import Handler, Pusher

from conftest import Harness, calls_until, token, wait_until

ACC1 = {"account_id": "acc1", "owner_id": "user1"}
PATH = b"/v2/accounts/acc1/channel_events"


class _RevokeAll:
    """What tokens grant after a reload that removed every one of them."""

    def current(self, _token: Any) -> None:
        return None


def revoke(h: Harness) -> int:
    """A reload that revokes every open stream (what Daemon.reload does for removed tokens);
    streams opened after it are checked against the daemon's grants again."""
    subs = h.daemon.ctx.subscriptions
    revoked = subs.revoke_changed(_RevokeAll())
    subs._grants = h.daemon.ctx.auth
    return revoked


def stream_request(version: bytes = b"1.1", extra: bytes = b"", method: bytes = b"GET") -> bytes:
    return (
        method
        + b" "
        + PATH
        + b" HTTP/"
        + version
        + b"\r\nHost: x\r\nX-Auth-Token: "
        + token("admin1").encode()
        + b"\r\n"
        + extra
        + b"\r\n"
    )


def recv_for(sock: socket.socket, seconds: float, until: bytes | None = None) -> tuple[bytes, bool]:
    """What arrives within `seconds` (or up to `until`), and whether the peer closed."""
    sock.settimeout(0.05)
    got = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            return got, True
        got += data
        if until is not None and until in got:
            break
    return got, False


def unchunk(raw: bytes) -> tuple[bytes, bytes]:
    """A chunked body's bytes and what follows its last chunk; a framing error fails here."""
    body = b""
    while True:
        size_line, rest = raw.split(b"\r\n", 1)
        size = int(size_line, 16)
        assert rest[size : size + 2] == b"\r\n", "a chunk not ended by its CRLF"
        body += rest[:size]
        raw = rest[size + 2 :]
        if size == 0:
            return body, raw


def frame_ids(body: bytes) -> list[int]:
    ids = []
    for block in body.decode().split("\n\n")[:-1]:
        if block.startswith(":"):
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        ids.append(int(fields["id"].rsplit("-", 1)[1]))
    return ids


@pytest.fixture
def partials(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per push a socket did not take whole."""
    return short_sends(monkeypatch)


# -- revocation ----------------------------------------------------------------------------------


def test_a_revocation_while_it_writes_for_itself_is_not_lost_when_it_parks(
    daemon: Harness, switch: Any, readers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream's greenlet checks its token, then writes (a keepalive, a batch it catches up
    with); a reload that lands during that write wakes every subscriber, but this one is
    parked by nobody yet: it then parked with its wake-up cleared, and the publisher went on
    writing the revoked token's events to it until its next keepalive (15 s)."""
    import channelsd.stream as stream

    monkeypatch.setattr(stream, "KEEPALIVE_SECONDS", 2.0)  # the write: a keepalive, soon
    revoked_at: list[float] = []
    real_write = Handler.write

    def write(self: Handler, data: bytes) -> Any:
        if data == b": keepalive\n\n" and not revoked_at:
            # (a write that blocks lets the hub run: the reload lands meanwhile)
            assert revoke(daemon) == 1
            revoked_at.append(time.monotonic())
        return real_write(self, data)

    monkeypatch.setattr(Handler, "write", write)
    r = readers(daemon)
    wait_until(r.frames, what="the snapshot")
    broker = daemon.daemon.ctx.broker
    wait_until(lambda: revoked_at, timeout=5, what="the keepalive and the reload")
    after = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)[0]
    gevent.sleep(0.5)  # publishes, and pushes if it parked
    leaked = [d["uuid"] for _, e, d in r.frames() if e == "create"]
    assert after not in leaked, "events of a revoked token were pushed after its revocation"
    assert broker.subscribers == 0, "the revoked stream still runs"


def test_a_revocation_while_a_push_waits_for_a_stopped_reader_ends_it_framed(
    daemon: Harness, switch: Any, partials: list[int]
) -> None:
    """A reader stops; a push leaves a rest; the token is revoked; the reader reads again and,
    on the same keep-alive connection, asks for something else: it gets every frame once, in
    order, the stream's last chunk, then the next answer (no rest of the stream leaks in)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(daemon.daemon.http_address)
    try:
        sock.sendall(stream_request())
        got, closed = recv_for(sock, 5, until=b"event: snapshot")
        assert b"event: snapshot" in got and not closed
        broker = daemon.daemon.ctx.broker
        wait_until(lambda: broker.feeds and next(iter(broker.feeds.values())).parked, what="parked")
        calls_until(daemon, switch, lambda: partials, ACC1)
        assert revoke(daemon) == 1
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # pipelined after the stream
        while True:
            more, closed = recv_for(sock, 5, until=b'"loop_lag_seconds"')
            got += more
            if closed or not more or b'"loop_lag_seconds"' in got:
                break
        head, raw = got.split(b"\r\n\r\n", 1)
        assert b"Transfer-Encoding: chunked" in head
        body, rest = unchunk(raw)
        ids = frame_ids(body)
        assert ids == sorted(set(ids)), "a frame twice or out of order"
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n"), rest[:200]
        assert rest.endswith(b"}") and b'"status":"ok"' in rest
        assert broker.subscribers == 0
    finally:
        sock.close()


# -- HTTP framing of the stream's end --------------------------------------------------------


def test_head_on_the_stream_has_no_body_on_a_kept_alive_connection(daemon: Harness) -> None:
    """HEAD's answer has no content (RFC 9110 9.3.2); the stream's last chunk (`0\\r\\n\\r\\n`)
    after it is read by the client as the start of the next answer: the connection's answers
    are out of step from there on."""
    with socket.create_connection(daemon.daemon.http_address, timeout=10) as sock:
        sock.sendall(stream_request(method=b"HEAD"))
        head, closed = recv_for(sock, 1.0)
        assert head.startswith(b"HTTP/1.1 200") and not closed
        body = head[head.index(b"\r\n\r\n") + 4 :]
        assert body == b"", f"HEAD answered with a body: {body!r}"
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        nxt, _ = recv_for(sock, 2.0, until=b"}")
        assert nxt.startswith(b"HTTP/1.1 200 OK\r\n"), nxt[:40]
    assert len(daemon.daemon.ctx.subscriptions) == 0


def test_an_http10_keep_alive_stream_that_ends_closes_its_connection(daemon: Harness) -> None:
    """HTTP/1.0 has no chunked framing: an unsized answer ends where its connection does. A
    client asking for keep-alive got `Connection: keep-alive`; a revoked stream then ended
    with nothing to tell the client so (it waited for frames until the idle timeout), and the
    next answer on that connection ran on as if it were the stream's bytes."""
    with socket.create_connection(daemon.daemon.http_address, timeout=10) as sock:
        sock.sendall(stream_request(b"1.0", b"Connection: keep-alive\r\n"))
        got, closed = recv_for(sock, 5, until=b"event: snapshot")
        assert b"event: snapshot" in got and not closed
        head = got.split(b"\r\n\r\n", 1)[0]
        assert b"Connection: keep-alive" not in head
        assert revoke(daemon) == 1
        more, closed = recv_for(sock, 2.0)
        assert closed, "the stream ended but its HTTP/1.0 connection stayed open"


# -- clients that vanish ---------------------------------------------------------------------


def test_a_reader_that_resets_with_a_push_rest_pending_leaves_nothing(
    daemon: Harness, switch: Any, readers: Any, partials: list[int]
) -> None:
    steady = readers(daemon)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(daemon.daemon.http_address)
    sock.sendall(stream_request())
    got, _ = recv_for(sock, 5, until=b"event: snapshot")
    assert b"event: snapshot" in got
    wait_until(steady.frames, what="the steady reader's snapshot")
    broker = daemon.daemon.ctx.broker
    feed = next(iter(broker.feeds.values()))
    wait_until(lambda: len(feed.parked) == 2, what="both parked")
    calls_until(daemon, switch, lambda: partials, ACC1)
    # It vanishes: RST, the rest of the push never read.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    wait_until(lambda: broker.subscribers == 1, what="the reset stream ended")
    wait_until(lambda: len(daemon.daemon.ctx.subscriptions) == 1, what="its place given back")
    marker = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)[0]
    wait_until(
        lambda: any(e == "create" and d["uuid"] == marker for _, e, d in steady.frames()),
        timeout=20,
        what="the steady reader goes on",
    )
    ids = [int(i.rsplit("-", 1)[1]) for i, _, _ in steady.frames()[1:]]
    assert ids == sorted(set(ids))
    wait_until(lambda: len(feed.parked) == 1, what="the steady reader parked again")


def test_a_half_closed_client_gets_its_stream_ended_cleanly(daemon: Harness, switch: Any) -> None:
    """A client that shuts its sending side is taken as gone: its stream ends, its place is
    given back, and the stream's end is still framed for whoever reads."""
    with socket.create_connection(daemon.daemon.http_address, timeout=10) as sock:
        sock.sendall(stream_request())
        got, _ = recv_for(sock, 5, until=b"event: snapshot")
        broker = daemon.daemon.ctx.broker
        wait_until(lambda: broker.feeds and next(iter(broker.feeds.values())).parked, what="parked")
        sock.shutdown(socket.SHUT_WR)
        wait_until(lambda: broker.subscribers == 0, what="the stream ended")
        more, closed = recv_for(sock, 2.0)
        got += more
        body, rest = unchunk(got.split(b"\r\n\r\n", 1)[1])
        assert body.startswith(b"id: ") and rest == b""
        assert len(daemon.daemon.ctx.subscriptions) == 0


# -- a crowd that comes and goes while batches are pushed in turns ----------------------------


def test_a_churning_crowd_leaves_no_subscriber_skipped_doubled_or_stale(
    daemon: Harness, switch: Any, readers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pushes pause every few subscribers (PUSH_TURN made small, so that a turn is taken with
    a few dozen), while readers connect and vanish, and calls come and go: the steady readers
    end with the same frames, once each and in order, and all are parked at the feed's last
    message once it is quiet (none left behind to wait for its keepalive)."""
    import channelsd.feeds as feeds
    import channelsd.stream as stream

    monkeypatch.setattr(feeds, "PUSH_TURN", 3)
    # A reader left parked behind the feed would get the marker only at its keepalive: with
    # none for an hour, it never gets it, whatever the machine's speed.
    monkeypatch.setattr(stream, "KEEPALIVE_SECONDS", 3600.0)
    rng = random.Random(7)
    steady = [readers(daemon, version=rng.choice(["1.0", "1.1"])) for _ in range(24)]
    wait_until(lambda: all(r.frames() for r in steady), what="the snapshots")
    broker = daemon.daemon.ctx.broker
    stop = False

    def churn() -> None:
        while not stop:
            r = WireReader(daemon)
            gevent.sleep(rng.choice([0.0, 0.02, 0.12]))
            if rng.random() < 0.5:
                r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            r.close()

    churners = [gevent.spawn(churn) for _ in range(6)]
    live: list[str] = []
    try:
        for _ in range(40):
            if live and rng.random() < 0.3:
                switch.hangup(live.pop(rng.randrange(len(live))))
            else:
                live.append(switch.bridged_call(variables_a=ACC1, variables_b=ACC1)[0])
            gevent.sleep(rng.choice([0.0, 0.03, 0.11]))
    finally:
        stop = True
        gevent.joinall(churners, timeout=5)
    wait_until(lambda: broker.subscribers == len(steady), what="the churn gone")
    marker = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)[0]
    for r in steady:
        wait_until(
            lambda r=r: any(e == "create" and d["uuid"] == marker for _, e, d in r.frames()),
            timeout=20,
            what="the marker on every steady stream",
        )
    ref = [(i, e, json.dumps(d, sort_keys=True)) for i, e, d in steady[0].frames()[1:]]
    for r in steady:
        got = [(i, e, json.dumps(d, sort_keys=True)) for i, e, d in r.frames()[1:]]
        assert got == ref
    feed = next(iter(broker.feeds.values()))
    wait_until(lambda: len(feed.parked) == len(steady), what="every steady reader parked")
    assert all(p.position == feed.last for p in feed.parked)


# -- what a closed stream leaves ----------------------------------------------------------------


def test_ended_streams_leave_no_handler_pusher_or_parked_for_the_collector(
    daemon: Harness, switch: Any, partials: list[int]
) -> None:
    """Streams ended by a revocation (kept alive, asked again), by a reset with a push's rest
    pending and by a plain close: nothing of them may wait for a full collection."""
    broker = daemon.daemon.ctx.broker
    addr = daemon.daemon.http_address

    def parked_soon() -> None:
        wait_until(lambda: broker.feeds and next(iter(broker.feeds.values())).parked, what="parked")

    def kept() -> list[Any]:
        return [o for o in gc.get_objects() if isinstance(o, Handler | Pusher | Parked)]

    gc.collect()
    # Alive after a full collection, before this test's streams: an earlier test's, still
    # referenced (a stream's greenlet waiting for ever keeps its handler). Failed apart,
    # named as what it is (a CI run blamed this test's streams for one).
    before = {id(o): o for o in kept()}
    gc.disable()
    try:
        # revoked, then a second request on the same connection
        with socket.create_connection(addr, timeout=10) as sock:
            sock.sendall(stream_request())
            recv_for(sock, 5, until=b"event: snapshot")
            parked_soon()
            revoke(daemon)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            recv_for(sock, 5)
        # reset with a push's rest pending
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(addr)
        sock.sendall(stream_request())
        recv_for(sock, 5, until=b"event: snapshot")
        parked_soon()
        calls_until(daemon, switch, lambda: partials, ACC1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        # closed while parked
        with socket.create_connection(addr, timeout=10) as sock:
            sock.sendall(stream_request())
            recv_for(sock, 5, until=b"event: snapshot")
            parked_soon()
        wait_until(lambda: not daemon.daemon.http.connections, what="every connection closed")
        wait_until(lambda: broker.subscribers == 0, what="every stream ended")
        gevent.sleep(0.2)
        left = [o for o in kept() if before.get(id(o)) is not o]
    finally:
        gc.enable()
    assert left == [], f"kept by reference cycles: {left}"
    assert not before, f"alive before this test began (an earlier test's): {list(before.values())}"


# -- a Kazoo token that expires while it is written to ---------------------------------------


def test_a_kazoo_token_expiring_between_pushes_gets_nothing_after_its_exp(
    switch: Any, make_daemon: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls every few milliseconds while the token's exp passes: no frame is written to the
    client after it, and the stream ends at it (its greenlet wakes then: no change needs to
    come). When each frame was written is read in the daemon, where it is decided: the
    client's reading can lag on a busy machine."""
    from kazoo_support import cluster
    from test_kazoo_auth import LEEWAY_SECONDS, kazoo_section

    written: list[float] = []  # time.time() of each write of frames to the stream's client
    real_push, real_write = Pusher.push, Handler.write

    def push(self: Pusher, data: bytes, chunk: bytes) -> bytes:
        written.append(time.time())
        return real_push(self, data, chunk)

    def write(self: Handler, data: bytes) -> None:
        if b"event: " in data:
            written.append(time.time())
        real_write(self, data)

    monkeypatch.setattr(Pusher, "push", push)
    monkeypatch.setattr(Handler, "write", write)
    h = make_daemon([switch], kazoo=kazoo_section(tmp_path))
    tok = cluster().token("acc1", exp_in=-LEEWAY_SECONDS + 2)
    sock = socket.create_connection(h.daemon.http_address, timeout=10)
    raw = bytearray()

    def read() -> None:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            raw.extend(data)

    sock.sendall(
        b"GET " + PATH + b" HTTP/1.1\r\nHost: x\r\nX-Auth-Token: " + tok.encode() + b"\r\n\r\n"
    )
    reader = gevent.spawn(read)
    try:
        wait_until(lambda: b"event: snapshot" in raw, what="the snapshot")
        expires = h.daemon.ctx.auth.find(tok).expires
        broker = h.daemon.ctx.broker
        wait_until(lambda: broker.feeds and next(iter(broker.feeds.values())).parked, what="parked")
        while time.time() < expires + 0.5:
            switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
            gevent.sleep(0.01)
        assert broker.subscribers == 0, "the stream outlived its token's exp"
        wait_until(lambda: b"\r\n0\r\n\r\n" in raw, what="the stream's end")
        assert len(written) > 2  # the snapshot and frames pushed while the token held
        # (the millisecond: the monotonic deadline the push loop keeps is the exp read off
        # the wall clock, converted once; not a margin for the machine's speed)
        late = [t - expires for t in written if t > expires + 0.001]
        assert not late, f"frames written {late} s after exp"
    finally:
        reader.kill()
        sock.close()
