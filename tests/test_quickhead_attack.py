"""Attacks on the quick reading of a plain GET's head (channelsd.quickhead, Handler._quick).

DEFECT (fails): test_a_client_gone_before_its_answer_kills_no_greenlet[quick]. _quick returns
False when the answer's connection must end (a reset or gone client, a send timeout, a 500),
and passes that on as handle_one_request's result; pywsgi's WSGIHandler.handle() knows None,
True or a (status, body) tuple, and unpacks False: TypeError, the connection's greenlet dies
and the hub reports it (in the daemon: an ERROR line with a traceback per connection, through
channelsd.logs.log_greenlet_errors, not rate-limited). pywsgi's reading of the same request
ends it quietly (the [pywsgi] case passes).

The rest are attacks that held: the quick reading answers as pywsgi's reading does."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import gevent
import pytest
import test_fastlane
from test_api import World
from test_fastlane import read_sized
from test_quickhead import _DATE, _MADE_ID

from channelsd import quickhead

from conftest import token, wait_until

world = test_fastlane.world  # the fixture: test_fastlane's daemon, its clock held


@pytest.fixture
def greenlet_errors(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What the hub reports as a greenlet that died of an exception (the daemon logs each at
    ERROR through channelsd.logs.log_greenlet_errors, unbounded)."""
    hub = gevent.get_hub()
    seen: list[Any] = []
    real = hub.print_exception

    def record(context: Any, kind: Any, value: Any, tb: Any) -> None:
        seen.append((kind, value))
        real(context, kind, value, tb)

    monkeypatch.setattr(hub, "print_exception", record)
    return seen


def reset_after(port: int, wire: bytes) -> None:
    """Send `wire` and close with a reset (SO_LINGER 0), before reading anything."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.sendall(wire)
    sock.close()


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "pywsgi"])
def test_a_client_gone_before_its_answer_kills_no_greenlet(
    world: World, greenlet_errors: list[Any], monkeypatch: pytest.MonkeyPatch, quick: bool
) -> None:
    server = world.h.daemon.http
    if not quick:
        monkeypatch.setattr(quickhead, "parse", lambda buffered: None)
    wire = f"GET /v2/channels HTTP/1.1\r\nX-Auth-Token: {token('super')}\r\n\r\n".encode()
    for _ in range(5):
        reset_after(server.server_port, wire)
    gevent.sleep(0.3)
    assert greenlet_errors == []


# -- what held ---------------------------------------------------------------------------------


def wire_of(path: str, *fields: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", *fields]) + "\r\n\r\n").encode("latin-1")


def both_ways(
    world: World, monkeypatch: pytest.MonkeyPatch, wire: bytes, count: int = 1
) -> tuple[list[bytes], list[bytes], int]:
    """The answers to `wire` (their Date taken out) with the quick reading and without it,
    and how many heads the quick reading took."""
    port = world.h.daemon.http.server_port
    parse = quickhead.parse
    taken = []

    def seen(buffered: bytes) -> Any:
        got = parse(buffered)
        taken.append(got is not None)
        return got

    for _ in range(3):  # (again when a second turned between the two: the envelope's stamp)
        taken.clear()
        monkeypatch.setattr(quickhead, "parse", seen)
        quick = responses(port, wire, count)
        monkeypatch.setattr(quickhead, "parse", lambda buffered: None)
        slow = responses(port, wire, count)
        monkeypatch.setattr(quickhead, "parse", parse)
        if quick == slow:
            break
    return quick, slow, sum(taken)


def responses(port: int, wire: bytes, count: int) -> list[bytes]:
    """`count` answers to `wire`, then what the server sent before closing (b"" when it kept
    the connection open a moment), request ids it made taken out."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wire)
        buf = b""
        for _ in range(count):
            try:
                head, body, buf = read_sized(sock, buf)
            except AssertionError as closed:
                out.append(f"closed: {closed}".encode())
                return out
            out.append(_MADE_ID.sub(rb"\1<made>", _DATE.sub(b"", head) + b"\r\n\r\n" + body))
        sock.settimeout(0.2)
        try:
            rest = buf + sock.recv(65536)
        except TimeoutError:
            rest = buf
        out.append(_MADE_ID.sub(rb"\1<made>", _DATE.sub(b"", rest)))
    return out


def test_a_head_that_exactly_fills_the_read_buffer_and_one_byte_more(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8192 bytes (the reader's buffer): read quickly; 8193: pywsgi's; the same answers, and
    a pipelined request whose head straddles the buffer's end is answered, in order."""
    tok = f"X-Auth-Token: {token('super')}"
    path = "/v2/accounts/acc1/channels"
    bare = wire_of(path, tok, "X-Request-ID: edge", "X-Pad: ")
    exact = wire_of(path, tok, "X-Request-ID: edge", "X-Pad: " + "p" * (8192 - len(bare)))
    over = wire_of(path, tok, "X-Request-ID: edge", "X-Pad: " + "p" * (8193 - len(bare)))
    assert len(exact) == 8192 and len(over) == 8193
    assert quickhead.parse(exact) is not None and quickhead.parse(over[:8192]) is None
    for wire, took in ((exact, 1), (over, 0)):
        quick, slow, taken = both_ways(world, monkeypatch, wire)
        assert quick == slow and quick[0].startswith(b"HTTP/1.1 200 ")
        assert taken == took
    first = wire_of(path, tok, "X-Request-ID: one")
    second = wire_of(path, tok, "X-Request-ID: two", "X-Pad: " + "q" * 8192)
    third = wire_of(path, tok, "X-Request-ID: three")
    quick, slow, taken = both_ways(world, monkeypatch, first + second + third, 3)
    assert quick == slow and taken == 2
    assert [a.split(b"X-Request-ID: ")[1][:3] for a in quick[:3]] == [b"one", b"two", b"thr"]


def test_tenants_and_tokens_are_decided_alike(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, a1, a2, u1 = (token(n) for n in ("super", "admin1", "admin2", "user1"))
    one = f"/v2/accounts/acc1/channels/{world.alice_a}"
    cases = [
        ("/v2/accounts/acc2/channels", [f"X-Auth-Token: {a1}"], False),
        ("/v2/accounts/acc2/channels", [f"X-Auth-Token: {a1}", f"Authorization: {s}"], False),
        (
            "/v2/accounts/acc2/channels",
            [f"Authorization: Bearer {s}", f"X-Auth-Token: {a1}"],
            False,
        ),
        ("/v2/accounts/acc2/channels", [f"Authorization: Bearer {s}"], True),
        ("/v2/accounts/acc2/channels", [f"Authorization: {s}"], True),
        ("/v2/accounts/acc2/channels", ["X-Auth-Token: ", f"Authorization: Bearer {s}"], True),
        ("/v2/accounts/acc2/channels", [f"X_Auth_Token: {s}"], False),
        ("/v2/accounts/acc2/channels", [f"X-Auth-Token: {s}", f"x-auth-token: {a1}"], False),
        ("/v2/accounts/acc2/channels", [f"X-AUTH-TOKEN:\t{s}\t"], True),
        ("/v2/channels", [f"X-Auth-Token: {a1}"], False),
        ("/v2/accounts/acc1/channels", [f"X-Auth-Token: {u1}"], None),  # (the user's own)
        ("/v2/accounts/acc1/users/user1/channels", [f"X-Auth-Token: {u1}"], None),
        ("/v2/accounts/acc1-sub/channels", [f"X-Auth-Token: {a1}"], True),  # (a descendant)
        (one, [f"X-Auth-Token: {a2}"], False),
        (one.replace("acc1", "acc2"), [f"X-Auth-Token: {s}"], False),
        (one, [f"X-Auth-Token: {a1}"], True),
        (one, [f"X-Auth-Token: {u1}"], None),
        ("/v2/accounts/acc2/channels/", [f"X-Auth-Token: {a1}"], False),
        ("/v2/accounts/acc2//channels", [f"X-Auth-Token: {s}"], False),
        ("/v2/accounts/./acc2/channels", [f"X-Auth-Token: {a1}"], False),
        ("/v2/accounts/acc1/../acc2/channels", [f"X-Auth-Token: {a1}"], False),
    ]
    for path, fields, ok in cases:
        quick, slow, _ = both_ways(world, monkeypatch, wire_of(path, *fields, "X-Request-ID: t"))
        assert quick == slow, (path, fields)
        if ok is not None:
            assert quick[0].startswith(b"HTTP/1.1 200 ") == ok, (path, fields, quick[0][:200])


FRAMING = [  # the fields (then, after the blank line, a body)
    b"Content-Length: 0",
    b"Content-Length: 5\r\n\r\nGET /",
    b"Content-Length: 00",
    b"Content-Length: +0",
    b"Content-Length: 0\r\nContent-Length: 0",
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 0",
    b"Expect: 100-continue",
    b"Upgrade: websocket\r\nConnection: Upgrade",
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA",
    b"Connection: close",
    b"connection: keep-alive",
    b"Connection: Keep-Alive, close",
    b"Content-Type: text/plain",
    b"Content_Length: 5",
    b"Transfer_Encoding: chunked",
    b"X-A: 1\r\n\r\nhello\r\n",
    b"X-A: 1\r\n\r\n\r\n",
]


@pytest.mark.parametrize("field", FRAMING)
def test_framing_and_connection_fields_are_answered_alike(
    world: World, monkeypatch: pytest.MonkeyPatch, field: bytes
) -> None:
    head = f"GET /v2/accounts/acc1/channels HTTP/1.1\r\nX-Auth-Token: {token('super')}\r\n"
    tail = f"GET /v2/accounts/acc1/channels HTTP/1.1\r\nX-Auth-Token: {token('admin1')}\r\n\r\n"
    field, _, body = field.partition(b"\r\n\r\n")  # (a body: after the blank line)
    wire = head.encode() + field + b"\r\n\r\n" + body + tail.encode()
    quick, slow, _ = both_ways(world, monkeypatch, wire, 2)
    assert quick == slow, wire


MALFORMED = [
    b"GET /v2/channels HTTP/1.1\r\nX-Auth-Token: %s\r\nX-A: 1\x002\r\n\r\n",
    b"GET /v2/channels HTTP/1.1\r\nX-Auth-Token: %s\r\nX-A: 1\r2\r\n\r\n",
    b"GET /v2/channels HTTP/1.1\r\nX-Auth-Token: %s\r\n folded\r\n\r\n",
    b"GET /v2/channels HTTP/1.1\r\nX-Auth-Token: %s\r\nX-A: \xe9\r\n\r\n",
    b"GET /v2/channels HTTP/1.1\r\nX-Auth-Token: %s\r\nX-\xe9: 1\r\n\r\n",
    b"GET /v2/channels HTTP/1.1\r\nX-Auth-Token : %s\r\n\r\n",
    b"GET /v2/channels HTTP/1.1\nX-Auth-Token: %s\n\n",
    b"GET /v2/channels HTTP/1.1\r\nX-Auth-Token: %s\n\r\n",
    b"GET /v2/channels HTTP/1.1\r\nX-Auth-Token: %s\r\n\n",
    b"GET /v2/channels HTTP/1.1 \r\nX-Auth-Token: %s\r\n\r\n",
    b"GET /v2/chan\tnels HTTP/1.1\r\nX-Auth-Token: %s\r\n\r\n",
    b"GET /v2/channels\x0b HTTP/1.1\r\nX-Auth-Token: %s\r\n\r\n",
    b"GET /v2/ch%%61nnels HTTP/1.1\r\nX-Auth-Token: %s\r\n\r\n",
    b"GET /v2/channels?a HTTP/1.1\r\nX-Auth-Token: %s\r\n\r\n",
    b"GET /v2/channels# HTTP/1.1\r\nX-Auth-Token: %s\r\n\r\n",
    b"GET http://h/v2/channels HTTP/1.1\r\nX-Auth-Token: %s\r\n\r\n",
    b"GET /v2/channels HTTP/1.10\r\nX-Auth-Token: %s\r\n\r\n",
    b"GET /v2/channels http/1.1\r\nX-Auth-Token: %s\r\n\r\n",
    b"\r\nGET /v2/channels HTTP/1.1\r\nX-Auth-Token: %s\r\n\r\n",
    b"GET /v2/channels HTTP/1.1\r\nX-Auth-Token: %s\r\n" + b"X-A: 1\r\n" * 98 + b"\r\n",
    b"GET /v2/channels HTTP/1.1\r\nX-Auth-Token: %s\r\n" + b"X-A: 1\r\n" * 97 + b"\r\n",
    b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\nX-Auth-Token: %s\r\n\r\n",
    b"GET /v2/channels HTTP/1.1\r\nX-Auth-Token: %s\r\nX-Request-ID: \x7f\r\n\r\n",
]


@pytest.mark.parametrize("wire", MALFORMED, ids=range(len(MALFORMED)))
def test_odd_and_malformed_heads_are_answered_alike(
    world: World, monkeypatch: pytest.MonkeyPatch, wire: bytes
) -> None:
    quick, slow, _ = both_ways(world, monkeypatch, wire % token("super").encode(), 1)
    assert quick == slow


def test_a_pipelined_mix_is_answered_alike_and_in_order(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, a1, u1 = token("super"), token("admin1"), token("user1")
    parts = [
        wire_of("/v2/accounts/acc1/channels", f"X-Auth-Token: {a1}", "X-Request-ID: r0"),
        wire_of("/v2/accounts/acc2/channels", f"X-Auth-Token: {a1}", "X-Request-ID: r1"),
        wire_of("/v2/channels", f"X-Auth-Token: {s}", "X-Request-ID: r2", "Content-Length: 0"),
        wire_of("/v2/accounts/acc1/channels", f"X-Auth-Token: {u1}", "X-Request-ID: r3"),
        wire_of("/v2/nothing", f"X-Auth-Token: {s}", "X-Request-ID: r4"),
        wire_of(
            f"/v2/accounts/acc1/channels/{world.alice_a}", f"X-Auth-Token: {s}", "X-Request-ID: r5"
        ),
        wire_of("/v2/channels?x=1", f"X-Auth-Token: {s}", "X-Request-ID: r6"),
        wire_of("/v2/channels", f"X-Auth-Token: {s}", "X-Request-ID: r7"),
    ]
    quick, slow, taken = both_ways(world, monkeypatch, b"".join(parts * 3), 24)
    assert quick == slow and taken >= 6
    ids = [a.split(b"X-Request-ID: ")[1][:2] for a in quick[:24]]
    assert ids == [f"r{i}".encode() for i in range(8)] * 3


SHORT = {"header_timeout": 1.0, "idle_timeout": 1.0, "body_timeout": 1.0, "send_timeout": 1.0}


def _until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """What comes until the server closes (at most `limit` s), and how long that took."""
    began = time.monotonic()
    sock.settimeout(limit)
    got = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return got, time.monotonic() - began
        got += data


@pytest.mark.parametrize(
    "then",
    [b"", b"GET /v2/channels HTTP/1.1\r\nX-Auth", b"GET /v2/channels HTTP/1.1\r\n"],
    ids=["idle", "half a head", "no blank line"],
)
def test_the_deadlines_hold_after_a_quick_answer(
    switch: Any, make_daemon: Any, then: bytes
) -> None:
    """A keep-alive connection whose first GET was read quickly still has the idle and the
    header deadlines: silence is closed, half a head is a 408."""
    h = make_daemon([switch], http=SHORT)
    port = h.daemon.http.server_port
    wire = wire_of("/v2/channels", f"X-Auth-Token: {token('super')}")
    assert quickhead.parse(wire) is not None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wire)
        head, _, rest = read_sized(sock, b"")
        assert head.startswith(b"HTTP/1.1 200 ") and rest == b""
        sock.sendall(then)
        got, _ = _until_closed(sock, 5.0)  # (a connection left open fails it: recv times out)
    assert got.startswith(b"HTTP/1.1 408 ") if then else got == b""


def test_a_trickled_head_is_not_read_quickly_and_gets_its_408(
    switch: Any, make_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte at a time the head is never whole in the buffer when asked: pywsgi reads it,
    against the header deadline."""
    h = make_daemon([switch], http=SHORT)
    port = h.daemon.http.server_port
    parse = quickhead.parse
    took: list[bool] = []
    monkeypatch.setattr(quickhead, "parse", lambda b: took.append(parse(b) is not None))
    wire = wire_of("/v2/channels", f"X-Auth-Token: {token('super')}")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        start = wire.index(b"\r\n") + 3  # (a request line cut by its deadline is just closed)
        sock.sendall(wire[:start])
        for i in range(start, len(wire) - 1):
            try:
                sock.sendall(wire[i : i + 1])
            except OSError:
                break
            gevent.sleep(0.05)
        got, _ = _until_closed(sock, 5.0)
    assert got.startswith(b"HTTP/1.1 408 ") and took == [False]


def test_a_pipelined_flood_does_not_starve_another_connection(world: World) -> None:
    """3,000 quick GETs pipelined on one connection: another connection's GET is answered
    while the flood is still being answered, not after it."""
    port = world.h.daemon.http.server_port
    count = 3000
    one = wire_of("/v2/accounts/acc1/channels", f"X-Auth-Token: {token('super')}")
    assert quickhead.parse(one) is not None
    answered = [0]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as flood:

        def read_flood() -> None:
            buf = b""
            while answered[0] < count:
                data = flood.recv(1 << 20)
                if not data:
                    return
                buf += data
                n = buf.count(b"HTTP/1.1 200 ")
                answered[0] += n
                buf = buf[buf.rfind(b"HTTP/1.1 200 ") + 1 :] if n else buf

        reader = gevent.spawn(read_flood)
        sender = gevent.spawn(flood.sendall, one * count)
        wait_until(lambda: answered[0] >= 50, 30, "the flood's first answers")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as victim:
            victim.sendall(wire_of("/v2/channels", f"X-Auth-Token: {token('super')}"))
            head, _, _ = read_sized(victim, b"")
            at = answered[0]
        reader.join(30)
        sender.join(30)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert at < count // 2, at
    assert answered[0] == count
