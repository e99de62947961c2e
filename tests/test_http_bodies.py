"""Request bodies, however framed (issue #11, item 11).

A body longer than http.max_body_bytes is a 413 and nothing runs, whether its length is
declared (Content-Length) or not (chunked); a body cut at the limit is never parsed (werkzeug's
stream stops at the limit without a word for a chunked body: a JSON object padded to 64 KiB
then anything ran). Framing that a proxy in front could read another way is a 400. Reading a
body, however it is chunked, lets the hub run between read buffers. All over raw sockets.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import gevent
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_actions import Call
from test_metaflow_limits import RunLengths

from channelsd import httpserver

from conftest import count_pauses, token

LIMIT = 65536  # http.max_body_bytes, the default
HANG = 10.0


@pytest.fixture(scope="module")
def module_switch() -> Any:
    from channelsd.standin.server import StandinSwitch

    sw = StandinSwitch(hostname="standin-bodies")
    sw.start()
    yield sw
    sw.stop()


@pytest.fixture(scope="module")
def call(module_switch: Any) -> Any:
    from channelsd.config import parse
    from channelsd.daemon import Daemon

    from conftest import Harness, config_dict

    daemon = Daemon(parse(config_dict([module_switch]), "test.toml"))
    daemon.start()
    h = Harness(daemon)
    h.wait_ready()
    yield Call(h, module_switch)
    daemon.stop()


def chunked(body: bytes, sizes: list[int]) -> bytes:
    """`body` in chunks of the given sizes (the last size repeats), then the last chunk."""
    out, at, i = [], 0, 0
    while at < len(body):
        n = max(1, sizes[min(i, len(sizes) - 1)])
        piece = body[at : at + n]
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        at += n
        i += 1
    return b"".join(out) + b"0\r\n\r\n"


def exchange(call: Call, head: bytes, payload: bytes, keep_alive: bool = False) -> list[bytes]:
    """POST to the parked call with `head` framing headers and `payload` on one connection;
    the status line of every response read until the server closes (or, kept alive, until
    it has said nothing more for a second)."""
    host, port = call.h.daemon.http_address
    call.mark = len(call.switch.received)
    s = socket.create_connection((host, port), timeout=1.0 if keep_alive else HANG)
    try:
        s.sendall(
            b"POST /v2/accounts/acc1/channels/%s HTTP/1.1\r\nHost: x\r\n" % call.p.encode()
            + b"Content-Type: application/json\r\nX-Auth-Token: %s\r\n" % token("admin1").encode()
            + (b"" if keep_alive else b"Connection: close\r\n")
            + head
            + b"\r\n"
        )
        with contextlib.suppress(OSError):  # the server may answer and close before the end
            s.sendall(payload)
        out = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while data := s.recv(65536):
                out += data
    finally:
        s.close()
    return [line for line in out.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def answer(call: Call, body: bytes, framing: str, sizes: list[int] | None = None) -> bytes:
    if framing == "chunked":
        statuses = exchange(
            call, b"Transfer-Encoding: chunked\r\n", chunked(body, sizes or [LIMIT])
        )
    else:
        statuses = exchange(call, b"Content-Length: %d\r\n" % len(body), body)
    assert len(statuses) == 1, statuses
    return statuses[0]


def action(pad: int) -> bytes:
    """A valid `break` request of exactly `pad` more bytes than the bare one (white space:
    an unknown field would be refused for itself)."""
    return b'{"data": {"action": "break"}' + b" " * pad + b"}"


BARE = len(action(0))


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1, 200_000, 8_000_000])
def test_a_body_over_the_limit_is_a_413_and_nothing_runs(
    call: Call, framing: str, size: int
) -> None:
    status = answer(call, action(size - BARE), framing)
    if size <= LIMIT:
        assert status.startswith(b"HTTP/1.1 200"), status
        assert call.sent() == [f"api uuid_break {call.p}"]
    else:
        assert status.startswith(b"HTTP/1.1 413"), status
        assert call.sent() == []


def test_a_valid_prefix_padded_to_the_limit_is_never_run(call: Call) -> None:
    """The smuggling attempt: a complete JSON request padded with spaces to the limit, then
    more bytes (here a second request) inside the same chunked body."""
    prefix = b'{"data": {"action": "break"}}'
    inner = b"GET /healthz?smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    body = prefix + b" " * (LIMIT - len(prefix)) + inner
    wire = chunked(body, [len(body)])
    statuses = exchange(call, b"Transfer-Encoding: chunked\r\n", wire, keep_alive=True)
    assert statuses and statuses[0].startswith(b"HTTP/1.1 413"), statuses
    assert len(statuses) == 1, statuses  # the hidden request was not answered either
    assert call.sent() == []


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Length: 29\r\nTransfer-Encoding: chunked\r\n",
        b"Content-Length: 29\r\nContent-Length: 29\r\n",
        b"Content-Length: +29\r\n",
        b"Content-Length: 2_9\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    ],
    ids=["length and chunked", "two lengths", "plus", "underscore", "gzip", "chunked twice"],
)
def test_framing_read_two_ways_is_a_400(call: Call, head: bytes) -> None:
    body = b'{"data": {"action": "break"}}'
    payload = chunked(body, [len(body)]) if b"chunked" in head else body
    statuses = exchange(call, head, payload)
    assert statuses and statuses[0].startswith(b"HTTP/1.1 400"), statuses
    assert call.sent() == []


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    size=st.one_of(st.integers(BARE, 2000), st.integers(LIMIT - 40, LIMIT + 40)),
    sizes=st.lists(st.integers(1, 70_000), min_size=1, max_size=4),
)
def test_chunked_and_declared_bodies_get_the_same_answer(
    call: Call, size: int, sizes: list[int]
) -> None:
    """Whatever the chunk sizes, a body gets the answer its declared-length twin gets, and
    the switch hears the same: 200 and one break up to the limit, 413 and nothing past it."""
    body = action(size - BARE)
    declared = answer(call, body, "length")
    declared_sent = call.sent()
    got = answer(call, body, "chunked", sizes)
    assert got.split(b" ")[1] == declared.split(b" ")[1], (got, declared)
    assert call.sent() == declared_sent
    assert declared.startswith(b"HTTP/1.1 413" if size > LIMIT else b"HTTP/1.1 200")


def _gets(call: Call, n: int) -> tuple[bytes, int]:
    """`n` keep-alive GETs of the parked call, as one byte string, and its size."""
    one = (
        b"GET /v2/accounts/acc1/channels/%s HTTP/1.1\r\nHost: x\r\n" % call.p.encode()
        + b"X-Auth-Token: %s\r\nX-Pad: %s\r\n\r\n" % (token("admin1").encode(), b"p" * 200)
    )
    return one * n, len(one)


def _read_answers(s: socket.socket, n: int) -> int:
    """Read until `n` answers have come (each a JSON body); their count of 200s."""
    out = b""
    while out.count(b"HTTP/1.1 ") < n or not out.endswith(b"}"):
        data = s.recv(65536)
        assert data, "the server closed the connection"
        out += data
    return out.count(b"HTTP/1.1 200 OK")


def test_a_client_that_waits_for_each_answer_never_takes_a_bulk_turn(
    call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keep-alive client asking again after each answer waited for its bytes every time:
    each wait was a poll in which every other socket had its turn. Its requests must not
    add up to a pause as bulk work (behind ingest's share of the hub, 10-15 ms: the reads'
    p99 under load before 2026-12-03), however many it sends."""
    visits = count_pauses(monkeypatch, httpserver)
    n = 8 * httpserver.PACE_READ_BYTES // 300
    one, size = _gets(call, 1)
    assert n * size > 4 * httpserver.PACE_READ_BYTES
    host, port = call.h.daemon.http_address
    with socket.create_connection((host, port), timeout=HANG) as s:
        for _ in range(n):
            s.sendall(one)
            assert _read_answers(s, 1) == 1
    assert visits == []


def test_a_client_that_keeps_sending_is_paced(call: Call, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same requests written at once, without waiting for answers (pipelined): the
    reader finds bytes without waiting and pauses every PACE_READ_BYTES, as for any client
    that keeps data coming."""
    visits = count_pauses(monkeypatch, httpserver)
    n = 8 * httpserver.PACE_READ_BYTES // 300
    wire, size = _gets(call, n)
    host, port = call.h.daemon.http_address
    with socket.create_connection((host, port), timeout=HANG) as s:
        s.sendall(wire)
        assert _read_answers(s, n) == n
    assert len(visits) >= len(wire) // (2 * httpserver.PACE_READ_BYTES), (len(visits), size)


def test_a_body_in_one_byte_chunks_lets_the_hub_run(
    call: Call, monkeypatch: pytest.MonkeyPatch, figure: Any
) -> None:
    """Six bytes on the wire per byte of body, each chunk's size line read a byte at a time:
    the reader visits the hub every read buffer, and the longest run without it is
    measured."""
    visits = count_pauses(monkeypatch, httpserver)
    body = action(LIMIT - BARE)
    wire = chunked(body, [1])
    clients: set[Any] = {gevent.getcurrent()}
    with RunLengths(clients) as runs:
        job = gevent.spawn(exchange, call, b"Transfer-Encoding: chunked\r\n", wire)
        clients.add(job)
        statuses = job.get(timeout=60)
    assert statuses == [b"HTTP/1.1 200 OK"], statuses
    assert call.sent() == [f"api uuid_break {call.p}"]
    assert len(visits) >= len(wire) // (httpserver.PACE_READ_BYTES + 65536)
    figure("hub stalls (chunked body)", wire_bytes=len(wire), worst_ms=round(runs.worst * 1000, 2))
    # Against hangs only (a stall on a loaded machine is not a failure); the visits above
    # are the structural check that the reader paces itself.
    assert runs.worst < HANG


def test_a_refused_body_still_reaches_its_end_and_the_client_reads_the_413(call: Call) -> None:
    """The rest of a refused body is read and dropped before the connection closes: the
    client sees the 413, not a reset."""
    body = orjson.dumps({"data": {"action": "break", "pad": "x" * 3_000_000}})
    for framing in ("length", "chunked"):
        assert answer(call, body, framing).startswith(b"HTTP/1.1 413")


def test_a_request_line_too_long_is_a_414_in_the_envelope(call: Call) -> None:
    """pywsgi's own 414 has an empty body; every error is in the API's envelope."""
    host, port = call.h.daemon.http_address
    with socket.create_connection((host, port), timeout=HANG) as s:
        s.sendall(b"GET /v2/accounts/acc1/channels?" + b"a=1&" * 3000 + b" HTTP/1.1\r\n\r\n")
        out = b""
        while data := s.recv(65536):
            out += data
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 414 "), head
    assert b"Content-Type: application/json" in head
    assert orjson.loads(body)["message"] == "request too long"


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": {"action": "break", "action": "hangup"}}',
        b'{"data": {"action": "hangup"}, "data": {"action": "break"}}',
        b'{"data": {"action": "transfer", "target": "1000", "target": "2000"}}',
        b'{"data": {"action": "break", "x": {"a": 1, "a": 2}}}',
    ],
    ids=["action twice", "data twice", "target twice", "nested key twice"],
)
def test_a_key_twice_in_one_object_is_refused_and_nothing_runs(call: Call, body: bytes) -> None:
    """orjson lets the last key win, Kazoo reads the first: one body, two meanings (outside
    attack, round 3: `action` break then hangup hung the call up)."""
    status = answer(call, body, "length")
    assert status.startswith(b"HTTP/1.1 400"), status
    assert call.sent() == []
    resp = call.h.api.request("POST", f"/v2/accounts/acc1/channels/{call.p}", "admin1", data=body)
    assert resp.status_code == 400
    assert "appears twice" in resp.json()["data"]["json"]["invalid"]["message"]
    assert call.sent() == []
