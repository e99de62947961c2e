"""Outside attack on the HTTP server's fast lane (httpserver.Handler's run_application
asking fastlists.lane before the WSGI round).

Real sockets against a real daemon; where it matters the same bytes are sent with the lane
and without it (`daemon.http.lane = None`, the WSGI path).

Defects it found, fixed (each test failed on the lane's first form, 52d2117):
* the lane did not reset pywsgi's per-answer state as handle_one_response does: after a
  chunked answer on the same kept-alive connection (an event stream that ended, or simply
  HEAD of one) its 200 went out chunk-framed under a Content-Length header;
* the lane was asked outside handle_one_response's error handling: a failure while answering
  was no 500 in the envelope and no masked log line, but a dropped connection and a
  traceback through gevent's hub.
The rest is what held: the same answers, counts, framing and timeouts with the lane as
without."""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import gevent
import pytest
from test_api import World
from test_fastlane import both, hold_the_clock, read_sized, recv_until, responses

from channelsd import daemon as daemon_module
from channelsd.config import parse

from conftest import config_dict, metric, metric_series, token, wait_until


@pytest.fixture
def world(switch: Any, make_daemon: Any) -> World:
    h = make_daemon([switch], identity={"device_owners": {"dev9": "user1"}})
    return World(h, switch)


def _read_chunked(sock: socket.socket, buf: bytes) -> tuple[bytes, bytes]:
    """A chunked body to its last chunk: (the body, what came after it)."""
    body = b""
    while True:
        buf = recv_until(sock, buf, b"\r\n")
        size_line, rest = buf.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(rest) < size + 2:
            data = sock.recv(65536)
            assert data, "closed inside a chunk"
            rest += data
        assert rest[size : size + 2] == b"\r\n"
        body += rest[:size]
        buf = rest[size + 2 :]
        if size == 0:
            return body, buf


def all_that_came(sock: socket.socket) -> bytes:
    """Every byte that came until the socket was quiet (a second for the first, then 0.3 s)
    or closed: an answer and whatever followed it."""
    got = b""
    sock.settimeout(1.0)
    try:
        while data := sock.recv(65536):
            got += data
            sock.settimeout(0.3)
    except TimeoutError:
        pass
    return got


def _reload_without(monkeypatch: pytest.MonkeyPatch, h: Any, switch: Any, name: str) -> None:
    """A SIGHUP reload whose configuration no longer has the token `name`."""
    data = config_dict([switch], identity={"device_owners": {"dev9": "user1"}})
    data["tokens"] = [t for t in data["tokens"] if t["name"] != name]
    monkeypatch.setattr(daemon_module.config_module, "load", lambda path: parse(data, "test.toml"))
    assert h.daemon.reload()


def assert_one_whole_answer(got: bytes, request_id: str) -> None:
    """`got` is one 200 framed by its Content-Length: its body the JSON of `request_id`,
    nothing after it to be read as another answer."""
    head, _, rest = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    length = int(re.search(rb"\r\nContent-Length: (\d+)", head).group(1))
    body = rest[:length]
    assert body.startswith(b'{"data":'), body[:40]
    assert json.loads(body)["request_id"] == request_id
    assert rest[length:] == b"", rest[length:][:80]


def _stream_then_list(world: World, switch: Any, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """An HTTP/1.1 event stream ended by a reload (its token removed), then, on the same
    kept-alive connection, a plain account list GET with another token: the raw bytes that
    came for the list (head, body and whatever followed within a short wait)."""
    h = world.h
    with socket.create_connection(h.daemon.http_address, timeout=10) as sock:
        sock.sendall(
            b"GET /v2/accounts/acc1/channel_events HTTP/1.1\r\nHost: x\r\n"
            b"X-Auth-Token: %s\r\n\r\n" % token("admin1").encode()
        )
        buf = recv_until(sock, b"", b"\r\n\r\n")
        head, _, buf = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in head, head
        buf = recv_until(sock, buf, b"snapshot")
        _reload_without(monkeypatch, h, switch, "admin1")
        _, buf = _read_chunked(sock, buf)  # the stream's last chunk: the connection stays
        assert buf == b""
        sock.sendall(
            b"GET /v2/accounts/acc1/channels HTTP/1.1\r\nHost: x\r\n"
            b"X-Auth-Token: %s\r\nX-Request-ID: after-stream\r\n\r\n" % token("super").encode()
        )
        return all_that_came(sock)


def test_a_lane_answer_after_an_ended_stream_is_framed_by_its_length(
    world: World, switch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event stream goes out chunked; once it ends (here a reload revoked its token; a
    Kazoo token's exp or Kazoo's no to a descendant end it too) the connection is kept for
    the next request. The lane
    writes its answer without resetting pywsgi's per-answer state (handle_one_response does:
    response_use_chunked), so the list goes out chunk-framed under a Content-Length header:
    the client reads a body that is not the JSON, and the bytes past the length are read as
    the start of the next answer."""
    assert_one_whole_answer(_stream_then_list(world, switch, monkeypatch), "after-stream")


def test_without_the_lane_an_answer_after_an_ended_stream_is_whole(
    world: World, switch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with the lane off (the WSGI path): the control."""
    world.h.daemon.http.lane = None
    assert_one_whole_answer(_stream_then_list(world, switch, monkeypatch), "after-stream")


def _head_stream_then_list(port: int) -> bytes:
    """HEAD of an event stream, then a plain list GET, pipelined by one client with one valid
    token: every byte that came back within a short wait."""
    tok = token("admin1").encode()
    wire = (
        b"HEAD /v2/accounts/acc1/channel_events HTTP/1.1\r\nHost: x\r\nX-Auth-Token: %s\r\n\r\n"
        b"GET /v2/accounts/acc1/channels HTTP/1.1\r\nHost: x\r\nX-Auth-Token: %s\r\n"
        b"X-Request-ID: after-head\r\n\r\n" % (tok, tok)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wire)
        return all_that_came(sock)


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "wsgi"])
def test_a_lane_answer_after_a_head_of_a_stream_is_framed_by_its_length(
    world: World, lane: bool
) -> None:
    """No reload needed: HEAD of an event stream is answered as a chunked answer without a body
    (pywsgi sets response_use_chunked; the HEAD sends no last chunk) and the connection stays.
    The next 200, the lane's, is framed by its Content-Length alone (the lane's first form
    sent it chunk-framed). Any client with a token that may open a stream does this,
    pipelined, in one write."""
    server = world.h.daemon.http
    if not lane:
        server.lane = None
    got = _head_stream_then_list(server.server_port)
    first, _, rest = got.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in first, first
    assert_one_whole_answer(rest, "after-head")


# -- what held: the same answers, counts and framing with the lane as without it -----------


def test_requests_are_counted_once_with_the_lane_as_without(world: World) -> None:
    """channelsd_http_requests_total: the same labels and counts whichever layer answered."""
    h = world.h
    server = h.daemon.http
    asks = [
        ("/v2/accounts/acc1/channels", "admin1"),  # the lane's
        ("/v2/channels", "super"),  # the lane's
        (f"/v2/accounts/acc1/channels/{world.alice_a}", "admin1"),  # the lane's
        ("/v2/accounts/acc2/channels", "admin1"),  # declined: Flask's 403
        ("/v2/accounts/acc1/channels", "user1"),  # declined: Flask's 200
        ("/v2/accounts/acc1/channels/nope", "admin1"),  # declined: Flask's 404
    ]
    wire = b"".join(
        b"GET %s HTTP/1.1\r\nHost: x\r\nX-Auth-Token: %s\r\n\r\n"
        % (path.encode(), token(tok).encode())
        for path, tok in asks
    )
    deltas = []
    for lane in (server.lane, None):
        saved, server.lane = server.lane, lane
        try:
            before = metric_series(h, "channelsd_http_requests_total{")
            responses(server.server_port, wire * 3, 3 * len(asks))
            after = metric_series(h, "channelsd_http_requests_total{")
        finally:
            server.lane = saved
        deltas.append({k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k)})
    with_lane, without = deltas
    assert with_lane == without
    assert sum(v for k, v in with_lane.items() if "/metrics" not in k) == 3 * len(asks)


@pytest.fixture
def still(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    """The answers' wall clock held still (test_fastlane.CLOCKED): both asks build the same
    bodies."""
    hold_the_clock(monkeypatch)
    return world


def _get(target: str, tok: str = "admin1", extra: bytes = b"", rid: str = "r") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: x\r\nX-Auth-Token: %s\r\nX-Request-ID: %s\r\n%s\r\n" % (
        target.encode(),
        token(tok).encode(),
        rid.encode(),
        extra,
    )


HOSTILE = {
    "absolute-form target": (_get("http://channelsd/v2/accounts/acc1/channels"), 1),
    "percent-encoded account": (_get("/v2/accounts/acc%31/channels"), 1),
    "percent-encoded slash": (_get("/v2/accounts/acc1%2Fchannels"), 1),
    "encoded trailing slash": (_get("/v2/accounts/acc1/channels%2F"), 1),
    "double slash": (_get("/v2//accounts/acc1/channels"), 1),
    "dot segments": (_get("/v2/accounts/acc2/../acc1/channels"), 1),
    "empty query": (_get("/v2/accounts/acc1/channels?"), 1),
    "auth_token in the query": (_get("/v2/accounts/acc1/channels?auth_token=x"), 1),
    "long path": (_get("/v2/accounts/" + "a" * 6000 + "/channels"), 1),
    "bearer token": (
        b"GET /v2/channels HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"X-Request-ID: r\r\n\r\n" % token("super").encode(),
        1,
    ),
    "another account's token": (_get("/v2/accounts/acc1/channels", "admin2"), 1),
    "another account's channel": (_get("/v2/accounts/acc2/channels/x", "admin1"), 1),
    "a request smuggled as a body, then a request": (
        _get(
            "/v2/accounts/acc1/channels",
            extra=b"Content-Length: %d\r\n" % len(_get("/v2/channels", "super", rid="in")),
        )
        + _get("/v2/channels", "super", rid="in")
        + _get("/v2/accounts/acc1/channels", rid="second"),
        2,
    ),
    "a chunked body, then a request": (
        _get("/v2/accounts/acc1/channels", extra=b"Transfer-Encoding: chunked\r\n")
        + b"5\r\nhello\r\n0\r\n\r\n"
        + _get("/v2/accounts/acc1/channels", rid="second"),
        2,
    ),
    "Content-Length 0 and Expect": (
        _get(
            "/v2/accounts/acc1/channels",
            extra=b"Content-Length: 0\r\nExpect: 100-continue\r\n",
        )
        + _get("/v2/accounts/acc1/channels", rid="second"),
        2,
    ),
    "upgrade to websocket": (
        _get(
            "/v2/accounts/acc1/channels",
            extra=b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        )
        + _get("/v2/accounts/acc1/channels", rid="second"),
        2,
    ),
    "keep-alive, close": (
        _get("/v2/accounts/acc1/channels", extra=b"Connection: keep-alive, close\r\n")
        + _get("/v2/accounts/acc1/channels", rid="second"),
        2,
    ),
    "gzip, pretty, csv": (
        _get("/v2/channels", "super", b"Accept-Encoding: gzip\r\n")
        + _get("/v2/channels", "super", b"X-Pretty-Print: true\r\n")
        + _get("/v2/channels", "super", b"Accept: text/csv\r\n"),
        3,
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_requests_are_answered_alike(still: World, name: str) -> None:
    wire, count = HOSTILE[name]
    with_lane, without, _ = both(still, wire, count)
    assert with_lane == without


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "wsgi"])
def test_a_client_that_stops_reading_is_closed_once_after_send_timeout(
    switch: Any, make_daemon: Any, lane: bool
) -> None:
    for _ in range(20):
        switch.bridged_call(variables_a={"account_id": "acc1"}, variables_b={"account_id": "acc1"})
    h = make_daemon([switch], http={"send_timeout": 1.0})
    wait_until(lambda: len(h.table) >= 40, what="channels listed")
    if not lane:
        h.daemon.http.lane = None
    name = 'channelsd_http_connections_closed_total{reason="send_timeout"}'
    before = metric(h, name)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(h.daemon.http_address)
    ask = _get("/v2/accounts/acc1/channels")
    try:
        s.sendall(ask * 300)  # ~8 MB of answers, never read
        wait_until(lambda: metric(h, name) > before, timeout=10, what="send timeout")
        wait_until(lambda: len(h.daemon.http.connections) <= 1, timeout=5, what="closed")
        gevent.sleep(0.3)
        assert metric(h, name) == before + 1
    finally:
        s.close()


def test_a_client_that_resets_mid_answer_leaves_no_error_and_no_connection(
    switch: Any, make_daemon: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import struct

    for _ in range(20):
        switch.bridged_call(variables_a={"account_id": "acc1"}, variables_b={"account_id": "acc1"})
    h = make_daemon([switch])
    wait_until(lambda: len(h.table) >= 40, what="channels listed")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(h.daemon.http_address)
    s.sendall(_get("/v2/accounts/acc1/channels") * 300)
    assert s.recv(100).startswith(b"HTTP/1.1 200 OK")
    gevent.sleep(0.2)  # the server blocked in a send
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # a reset
    wait_until(lambda: len(h.daemon.http.connections) == 0, timeout=5, what="closed")
    assert h.api.get("/healthz", tok=None).status_code == 200
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "wsgi"])
def test_a_failure_while_answering_is_a_500_in_the_envelope(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, lane: bool
) -> None:
    """Fault injection (no client input known to reach it): the list's build raises. On the
    WSGI path pywsgi's handle_one_response catches it (handle_error: a masked log line and a
    500 in the API's envelope, the connection closed after it); so must the lane's (its first
    form was asked outside that try: the client got no answer at all and the traceback went
    to gevent's hub, stderr, not the masked log)."""
    h = world.h
    if not lane:
        h.daemon.http.lane = None

    def broken(*args: Any, **kw: Any) -> bytes:
        raise RuntimeError("a bug in the list's build")

    monkeypatch.setattr(h.daemon.ctx.lists, "json", broken)
    with socket.create_connection(h.daemon.http_address, timeout=5) as sock:
        sock.sendall(_get("/v2/accounts/acc1/channels"))
        got = b""
        while data := sock.recv(65536):
            got += data
    assert got.startswith(b"HTTP/1.1 500 "), got[:200]
    assert b'"status":"error"' in got
    assert [r for r in caplog.records if r.levelname == "ERROR" and r.name == "channelsd.http"]


def test_a_token_removed_by_a_reload_is_refused_on_a_kept_alive_connection(
    world: World, switch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = world.h
    with socket.create_connection(h.daemon.http_address, timeout=10) as sock:
        sock.sendall(_get("/v2/accounts/acc1/channels"))
        head, _, buf = read_sized(sock, b"")
        assert head.startswith(b"HTTP/1.1 200 OK")
        _reload_without(monkeypatch, h, switch, "admin1")
        sock.sendall(_get("/v2/accounts/acc1/channels") + _get("/v2/channels", "super"))
        head, body, buf = read_sized(sock, buf)
        assert head.startswith(b"HTTP/1.1 401 "), head
        head, body, buf = read_sized(sock, buf)
        assert head.startswith(b"HTTP/1.1 200 OK") and json.loads(body)["status"] == "success"


def test_large_gzip_lists_pipelined_keep_their_framing(switch: Any, make_daemon: Any) -> None:
    import gzip as gzip_module

    for _ in range(150):
        switch.bridged_call(variables_a={"account_id": "acc1"}, variables_b={"account_id": "acc1"})
    h = make_daemon([switch])
    wait_until(lambda: len(h.table) >= 300, what="300 channels")
    h.daemon.ctx.lists.gzip_above = 64 * 1024
    z = b"Accept-Encoding: gzip\r\n"
    wire = (
        _get("/v2/channels", "super", z, "g1")
        + _get("/v2/channels", "super", z, "g2")
        + _get("/v2/channels", "super", rid="plain")
        + _get("/v2/channels", "super", z, "g3")
    )
    with socket.create_connection(h.daemon.http_address, timeout=10) as sock:
        sock.sendall(wire)
        buf = b""
        seen = []
        for rid in ("g1", "g2", "plain", "g3"):
            head, body, buf = read_sized(sock, buf)
            assert head.startswith(b"HTTP/1.1 200 OK"), head
            if b"Content-Encoding: gzip" in head:
                body = gzip_module.decompress(body)
                seen.append("gzip")
            doc = json.loads(body)
            assert doc["request_id"] == rid and len(doc["data"]) >= 300
        assert "gzip" in seen
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # nothing past the four answers
