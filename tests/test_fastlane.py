"""The HTTP server's fast lane (httpserver.Handler.run_application with
channelsd.fastlists.lane) writes, byte for byte but the Date, what the WSGI path writes for
the same request, and answers only what pywsgi would frame just so.

One daemon; each request goes over a raw socket twice, with the lane and without it (the
server's `lane` unset: then the application's fast_lists layer answers, or Flask), the clock
of the answers held still so that both build the same bodies."""

from __future__ import annotations

import re
import socket
import time
from typing import Any

import pytest
from test_api import World

from channelsd import api, daemon, envelope, fastlists, httpserver

from conftest import token

_DATE = re.compile(rb"\r\nDate: [^\r]*")


# Every module that reads the wall clock into an answer's bytes: the lists' and a channel's
# durations (fastlists on the lane, api on Flask's path) and the envelope's timestamp. One
# left running let two asks straddle a second and differ by it (a CI run, once in 250 heads).
# And the daemon's tick, which turns the lists' cache to its second: on the real clock it
# would turn it away from the held one at every tick, a state the daemon never reaches.
CLOCKED = (fastlists, api, envelope, daemon)


class StillTime:
    """The time module with its wall clock held still; everything else passed through."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def hold_the_clock(monkeypatch: pytest.MonkeyPatch) -> StillTime:
    """The answers' wall clock held still: durations and timestamps do not move between two
    asks of one answer (a test may move it on by hand: `.now`)."""
    still = StillTime()
    for module in CLOCKED:
        assert module.time is time, module  # each reads it as `time.time()`
        monkeypatch.setattr(module, "time", still)
    return still


@pytest.fixture
def world(switch: Any, make_daemon: Any, monkeypatch: pytest.MonkeyPatch) -> World:
    h = make_daemon([switch], identity={"device_owners": {"dev9": "user1"}})
    world = World(h, switch)
    hold_the_clock(monkeypatch)
    return world


def recv_until(sock: socket.socket, buf: bytes, marker: bytes) -> bytes:
    """`buf` and what came after it, up to and past `marker`."""
    while marker not in buf:
        data = sock.recv(65536)
        assert data, f"closed before {marker!r}: {buf[-300:]!r}"
        buf += data
    return buf


def read_sized(sock: socket.socket, buf: bytes, head_only: bool = False) -> tuple[bytes, ...]:
    """One answer framed by its Content-Length (none read for a HEAD's): (head, body, what
    came after it)."""
    buf = recv_until(sock, buf, b"\r\n\r\n")
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    if not head_only:
        m = re.search(rb"\r\nContent-Length: (\d+)", head, re.I)
        assert m, head
        length = int(m.group(1))
    while len(rest) < length:
        data = sock.recv(65536)
        assert data, "closed inside a body"
        rest += data
    return head, rest[:length], rest[length:]


def responses(port: int, wire: bytes, count: int) -> list[bytes]:
    """Send `wire` (one or more requests) and read `count` answers, each framed by its
    Content-Length, their Date taken out."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wire)
        buf = b""
        for _ in range(count):
            head, body, buf = read_sized(sock, buf, wire.startswith(b"HEAD"))
            out.append(_DATE.sub(b"", head) + b"\r\n\r\n" + body)
    return out


def request(
    path: str, tok: str | None = "super", version: str = "HTTP/1.1", **headers: str
) -> bytes:
    lines = [f"GET {path} {version}", "Host: channelsd"]
    if tok is not None:
        lines.append(f"X-Auth-Token: {token(tok)}")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def both(world: World, wire: bytes, count: int = 1) -> tuple[list[bytes], list[bytes], int]:
    """The answers with the lane and without it, and how many the lane answered (the
    answers' clock held by the fixture, so they are asked once each)."""
    server = world.h.daemon.http
    lane = server.lane
    port = server.server_port
    answered = 0

    def counting(environ: dict[str, Any]) -> Any:
        nonlocal answered
        got = lane(environ)
        answered += got is not None
        return got

    server.lane = counting
    try:
        with_lane = responses(port, wire, count)
        server.lane = None
        without = responses(port, wire, count)
    finally:
        server.lane = lane
    return with_lane, without, answered


def test_the_held_clock_holds_every_answer_across_a_second(world: World) -> None:
    # What makes two asks of one answer comparable: each path, asked on the lane and off it,
    # answers the same bytes after the real clock has turned a second (a list's durations,
    # a channel's, a refusal's and the envelope's timestamp all held).
    wire = b"".join(request(path, X_Request_ID="one-id") for path in paths(world))
    count = len(paths(world))
    before = both(world, wire, count)
    second = int(time.time())
    while int(time.time()) == second:
        time.sleep(0.05)
    after = both(world, wire, count)
    assert before[0] == before[1]
    assert after == before


def paths(world: World) -> list[str]:
    return [
        "/v2/channels",
        "/v2/accounts/acc1/channels",
        "/v2/accounts/acc1/channels/",
        "/v2/accounts/acc2/channels",
        "/v2/accounts/acc1/users/user1/channels",
        "/v2/accounts/acc1/devices/dev9/channels",
        f"/v2/accounts/acc1/channels/{world.alice_a}",
        f"/v2/accounts/acc2/channels/{world.alice_a}",
        "/v2/accounts/acc1/channels/no-such-uuid",
        "/v2/accounts/acc1/channels?filter_answered=true",
        "/v2/nothing-here",
    ]


@pytest.mark.parametrize("tok", ["super", "admin1", "user1", None])
def test_the_lane_writes_what_the_wsgi_path_writes(world: World, tok: str | None) -> None:
    answered = 0
    for path in paths(world):
        for headers in (
            {"X-Request-ID": "one-id"},
            {"X-Request-ID": "one-id", "Accept-Encoding": "gzip"},
        ):
            with_lane, without, n = both(world, request(path, tok, **headers))
            assert with_lane == without, (path, tok, headers)
            answered += n
    if tok in ("super", "admin1"):
        assert answered >= 8  # the lane answered the plain cases itself
    else:
        assert answered == 0  # a user's lists and a missing token are the resource's


@pytest.mark.parametrize(
    "wire",
    [
        b"GET /v2/accounts/acc1/channels HTTP/1.0\r\nX-Auth-Token: %s\r\nX-Request-ID: i\r\n\r\n",
        b"GET /v2/accounts/acc1/channels HTTP/1.0\r\nConnection: keep-alive\r\n"
        b"X-Auth-Token: %s\r\nX-Request-ID: i\r\n\r\n",
        b"GET /v2/accounts/acc1/channels HTTP/1.1\r\nConnection: close\r\n"
        b"X-Auth-Token: %s\r\nX-Request-ID: i\r\n\r\n",
        b"HEAD /v2/accounts/acc1/channels HTTP/1.1\r\nX-Auth-Token: %s\r\nX-Request-ID: i\r\n\r\n",
    ],
    ids=["http/1.0", "http/1.0 keep-alive", "connection close", "head"],
)
def test_what_pywsgi_frames_otherwise_is_not_the_lanes(world: World, wire: bytes) -> None:
    with_lane, without, answered = both(world, wire % token("super").encode())
    assert with_lane == without
    assert answered == 0


def test_pipelined_requests_are_answered_in_order_alike(world: World) -> None:
    wire = b"".join(request(p, "admin1", X_Request_ID=f"r{i}") for i, p in enumerate(paths(world)))
    with_lane, without, answered = both(world, wire, len(paths(world)))
    assert with_lane == without
    assert [re.search(rb"X-Request-ID: (r\d+)", a).group(1) for a in with_lane] == [
        f"r{i}".encode() for i in range(len(paths(world)))
    ]
    assert answered >= 4


def test_a_large_answer_goes_out_in_pieces_alike(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above JOIN_BELOW a body's large piece goes out on its own, never copied into a bigger
    buffer: the same sends with the lane as without it."""
    monkeypatch.setattr(httpserver, "JOIN_BELOW", 64)
    sends: list[tuple[int, int]] = []
    real = httpserver.Handler._sendall

    def counted(self: Any, data: Any, flags: int = 0) -> None:
        sends.append((len(data), flags))
        real(self, data, flags)

    monkeypatch.setattr(httpserver.Handler, "_sendall", counted)
    server = world.h.daemon.http
    wire = request("/v2/channels", X_Request_ID="big")
    out = []
    for lane in (server.lane, None):
        saved, server.lane = server.lane, lane
        try:
            out.append(responses(server.server_port, wire, 1))
        finally:
            server.lane = saved
        out.append(list(sends))
        sends.clear()
    with_lane, lane_sends, without, wsgi_sends = out
    assert with_lane == without
    # the headers with the envelope's opening, the list's bytes as they are, the rest
    assert lane_sends == wsgi_sends and len(lane_sends) == 3


def test_a_request_the_lane_left_is_not_asked_again(world: World) -> None:
    """fast_lists, in front of Flask, skips what the lane already declined."""
    called = []
    app = fastlists.fast_lists(world.h.daemon.ctx, lambda env, sr: called.append(env) or [b""])
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/v2/accounts/acc1/channels",
        "QUERY_STRING": "",
        "HTTP_X_AUTH_TOKEN": token("super"),
    }
    started: list[str] = []
    assert app(dict(environ), lambda status, headers: started.append(status)) != [b""]
    assert started == ["200 OK"] and not called  # answered in front of the app
    app({**environ, fastlists.DECLINED: True}, lambda status, headers: started.append(status))
    assert len(called) == 1  # declined by the lane: straight to the app


def test_the_lane_dates_each_answer_as_pywsgi_does(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lane's Date (made once a second, httpserver._date_line) is an HTTP-date of the
    server's now, spelt as pywsgi spells it, and moves on with its clock: a Date kept from an
    earlier second, or a head ended wrongly, fails here (the byte-for-byte tests above take
    the Date out). The server's clock is held and moved by the test."""
    from email.utils import parsedate_to_datetime

    from gevent.pywsgi import format_date_time

    class Clock:
        """httpserver's `time` module, its wall clock the test's."""

        now = float(int(time.time())) + 0.7

        def time(self) -> float:
            return self.now

        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

    clock = Clock()
    monkeypatch.setattr(httpserver, "time", clock)
    port = world.h.daemon.http.server_port
    wire = request("/v2/channels")
    start = int(clock.now)
    for step, second in ((0.0, 0), (0.2, 0), (0.2, 1), (60.0, 61)):
        clock.now += step
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(wire)
            head, _, _ = read_sized(sock, b"")
        date = _DATE.search(head)
        assert date is not None and head.endswith(date.group(0)), head  # the head's last line
        value = date.group(0).split(b": ", 1)[1]
        expected = start + second
        assert value == format_date_time(expected), (value, step)
        assert parsedate_to_datetime(value.decode("latin-1")).timestamp() == expected
