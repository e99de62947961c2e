"""Attacks on the issue #16 changes (fast header parser, fast actions, gzip lists, ended
records, ESL writes), each over real sockets where the real thing is a socket."""

import contextlib
import io
import socket
from typing import Any

import gevent
import orjson
import pytest
import requests
from test_floods import raw_exchange

from channelsd import gzipped, listing
from channelsd.esl import ESLConnection
from channelsd.httpheaders import read_headers

from conftest import Harness, preparing, token, wait_until

ACC1 = {"account_id": "acc1", "owner_id": "user1"}

HANG = 5.0


def statuses(h: Harness, raw: bytes) -> list[bytes]:
    """Every status line the daemon answers `raw` with on one connection, read until it
    closes or says nothing for a second."""
    host, port = h.daemon.http_address
    out = b""
    with socket.create_connection((host, port), timeout=1.0) as s:
        s.sendall(raw)
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while data := s.recv(65536):
                out += data
    return [line for line in out.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


# -- header blocks: a line the email parser reads another way than a proxy would ---------------
# A bare CR ends a line for the email parser (RFC 9112 §2.2: such an element is invalid); a
# field line that is no `name: value` (a space before the colon, a name with a control or
# non-ASCII byte, no colon at all) ends the block for it, and every field after it (a
# Content-Length, a Transfer-Encoding) is dropped into the body. A proxy in front that reads
# either way differently frames the body as another request. Each is a 400, whatever follows.
SECOND = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
ODD_LINES = [
    b"X-Foo: a\rContent-Length: %d\r\n" % len(SECOND),
    b"Content-Length : %d\r\n" % len(SECOND),
    b"garbage\r\nContent-Length: %d\r\n" % len(SECOND),
    b"X\x80: 1\r\nContent-Length: %d\r\n" % len(SECOND),
    b"X\x00: 1\r\nContent-Length: %d\r\n" % len(SECOND),
    b"X-Foo: a\rTransfer-Encoding: chunked\r\n",
    b": novalue\r\nContent-Length: %d\r\n" % len(SECOND),
]


@pytest.mark.parametrize("odd", ODD_LINES)
def test_a_block_read_two_ways_is_refused(daemon: Harness, odd: bytes) -> None:
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + odd + b"\r\n"
    assert statuses(daemon, first + SECOND) == [b"HTTP/1.1 400 Bad Request"]


@pytest.mark.parametrize("odd", ODD_LINES)
def test_the_parser_refuses_what_it_would_read_two_ways(odd: bytes) -> None:
    with pytest.raises(ValueError):
        read_headers(io.BytesIO(b"Host: x\r\n" + odd + b"\r\n"))


@pytest.mark.parametrize(
    "fine",
    [
        b"X-Name: caf\xc3\xa9\r\n",  # obs-text in a value: read as latin-1, as before
        b"X-Fold: a\r\n b\r\n",  # obs-fold: joined as before
        b"X-Empty:\r\n",
        b"X_Under: 1\r\n",
    ],
)
def test_what_is_not_ambiguous_is_still_read(fine: bytes) -> None:
    msg = read_headers(io.BytesIO(b"Host: x\r\n" + fine + b"Content-Length: 2\r\n\r\n{}"))
    assert msg.get_all("Content-Length") == ["2"]


# -- gzip: a hostile Accept-Encoding -----------------------------------------------------------
# pywsgi joins repeated header lines into one value: a hundred 64 KB Accept-Encoding lines make
# a 6 MB header, which werkzeug's parser read on the hub for ~4 s (every other client and the
# switch's events waited). A browser's is a few dozen bytes: a longer one is not parsed at all.
LONG_ACCEPT = 1024


@pytest.fixture
def gzip_lists(switch: Any, make_daemon: Any) -> Harness:
    for _ in range(40):
        switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    h = make_daemon([switch])
    wait_until(lambda: len(h.table) >= 80, what="80 channels")
    h.daemon.ctx.lists.gzip_above = 1  # every kept list goes in gzip when asked again
    return h


@pytest.mark.parametrize("path", ["/v2/channels", "/v2/channels?paginate=false"])
def test_a_huge_accept_encoding_is_not_parsed(
    gzip_lists: Harness, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    parsed: list[int] = []
    real = gzipped.parse_accept_header

    def counting(value: str, *a: Any) -> Any:
        parsed.append(len(value))
        return real(value, *a)

    monkeypatch.setattr(gzipped, "parse_accept_header", counting)
    lines = b"".join(b"Accept-Encoding: gzip," + b"a," * 30000 + b"\r\n" for _ in range(90))
    raw = (
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"X-Auth-Token: " + token("super").encode() + b"\r\n" + lines + b"\r\n"
    )
    for _ in range(2):  # the second is answered from the cache: gzip if it were read
        out = raw_exchange(gzip_lists.daemon.http_address, raw)
        head = out.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 200") and b"content-encoding" not in head
    assert parsed == [] or max(parsed) <= LONG_ACCEPT


def test_a_short_accept_encoding_still_takes_gzip() -> None:
    assert gzipped.accepts_gzip("gzip, deflate, br, zstd")
    assert not gzipped.accepts_gzip("gzip," * 1000)  # too long to read: raw


# -- gzip: compressing fails (out of memory, a broken thread pool) ---------------------------
# The answer can always go raw: a failed compression must not turn a list into a 500 for the
# request that compressed it and every one that waited for it, nor kill the preparer.
def _list(h: Harness, path: str = "/v2/channels") -> tuple[int, str | None, int]:
    resp = requests.get(
        h.api.base + path,
        headers={"X-Auth-Token": token("super"), "Accept-Encoding": "gzip"},
        timeout=HANG,
    )
    body = resp.json() if resp.status_code == 200 else {}
    return resp.status_code, resp.headers.get("Content-Encoding"), len(body.get("data", ()))


def test_a_failed_compression_answers_raw(
    gzip_lists: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def failing(head: bytes, data: bytes, pause: Any) -> Any:
        calls.append(len(data))
        raise MemoryError("no room for the compressed list")

    monkeypatch.setattr(listing, "compress", failing)
    n = len(gzip_lists.table)
    for _ in range(3):
        assert _list(gzip_lists) == (200, None, n)
    asked = gevent.joinall([gevent.spawn(_list, gzip_lists) for _ in range(6)], raise_error=True)
    assert [g.value for g in asked] == [(200, None, n)] * 6
    assert calls  # it was tried


def test_a_failed_preparation_does_not_kill_the_preparer(
    gzip_lists: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    lists = gzip_lists.daemon.ctx.lists
    real = listing.compress
    tried: list[Any] = []  # the preparer greenlets that were refused their compression

    def failing_in_preparer(head: bytes, data: bytes, pause: Any) -> Any:
        if preparing(lists):
            tried.append(gevent.getcurrent())
            raise MemoryError("no room for the next second's list")
        return real(head, data, pause)

    monkeypatch.setattr(listing, "compress", failing_in_preparer)
    # asked in gzip until the preparer tries (a second turning over may skip a round)
    wait_until(lambda: _list(gzip_lists)[1] == "gzip" and tried, what="a preparation")
    preparer = tried[0]
    wait_until(lambda: preparer.dead, timeout=HANG, what="the preparer's end (nobody asks)")
    assert preparer.exception is None  # it ended as nobody asked, not with a traceback
    assert _list(gzip_lists)[0] == 200


# -- ESL: a command that cannot be written must not be queued for a reply --------------------
# _send_all queued the command's reply slot, then encoded it: a text UTF-8 cannot hold (a lone
# surrogate) raised after the slot was queued, and every later command on the connection was
# handed the reply of the one before it.
def test_an_unencodable_command_is_refused_before_it_is_queued(switch: Any) -> None:
    cmd = ESLConnection("127.0.0.1", switch.port, "ClueCon", timeout=2)
    cmd.connect()
    try:
        with pytest.raises(ValueError):
            cmd.api("uuid_exists \udc80")
        for _ in range(2):  # each reply is its own command's
            assert cmd.api("global_getvar core_uuid").strip() == switch.core_uuid
            assert cmd.api("uuid_exists 00000000-0000-0000-0000-000000000000") == "false"
        assert cmd.alive
    finally:
        cmd.goodbye()


# -- gzip: the preparer builds the next second's list once, not over and over ----------------
# After preparing second s+1 at s.7, the loop found itself still in second s, slept 0 and, the
# dashboards' asks having filled its queue again, built and compressed the same list for s+1
# again, and again, until s ended: several builds of the system list a second, not one.
def test_the_next_second_is_prepared_once_while_clients_poll(
    gzip_lists: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    lists = gzip_lists.daemon.ctx.lists
    real = listing.compress
    prepared_in: list[int] = []  # the second in which the preparer compressed, per call

    def counting(head: bytes, data: bytes, pause: Any) -> Any:
        if preparing(lists):
            prepared_in.append(int(time.time()))
        return real(head, data, pause)

    monkeypatch.setattr(listing, "compress", counting)
    end = int(time.time()) + 3
    while time.time() < end:  # a dashboard polling without pause
        assert _list(gzip_lists)[0] == 200
    assert prepared_in  # (it prepared)
    assert len(prepared_in) == len(set(prepared_in)), prepared_in


# -- fast actions: a hostile tenant's forms never send a command -----------------------------
# (These held: the plain POST answered in front of Flask refuses, through Flask, everything the
# resource refuses; kept as a guard over real sockets.)
HOSTILE_ACTIONS = [
    # another account's channel, with a token of its own account in the path
    ("acc2", {"X-Auth-Token": "tok-admin2-0123456789"}, b'{"action": "hangup"}', 404),
    # another account's token on this account
    ("acc1", {"X-Auth-Token": "tok-admin2-0123456789"}, b'{"action": "hangup"}', 403),
    # a user token on a call that is not its user's
    ("acc1", {"X-Auth-Token": "tok-user1-0123456789"}, b'{"action": "hangup"}', 404),
    # two tokens, joined by the server into one that is neither
    (
        "acc1",
        {"X-Auth-Token": "tok-admin1-0123456789", "x-auth-token": "tok-super-0123456789"},
        b'{"action": "hangup"}',
        401,
    ),
    # a key twice, a list, a metaflow by POST
    ("acc1", {}, b'{"action": "break", "action": "hangup"}', 400),
    ("acc1", {}, b'[{"action": "hangup"}]', 400),
    ("acc1", {}, b'{"action": "metaflow", "data": {"module": "hangup"}}', 400),
]


@pytest.mark.parametrize("account, headers, body, status", HOSTILE_ACTIONS)
def test_a_hostile_action_sends_nothing(
    daemon: Harness, switch: Any, account: str, headers: dict[str, str], body: bytes, status: int
) -> None:
    a, _ = switch.originate(
        dest="9003", variables={"account_id": "acc1", "owner_id": "user9", "authorizing_id": "d9"}
    )
    wait_until(lambda: daemon.table.get(a) is not None, what="the call")
    lines = [b"POST /v2/accounts/%s/channels/%s HTTP/1.1" % (account.encode(), a.encode())]
    lines += [b"Host: x", b"Connection: close", b"Content-Length: %d" % len(body)]
    if not headers:
        headers = {"X-Auth-Token": "tok-admin1-0123456789"}
    lines += [b"%s: %s" % (k.encode(), v.encode()) for k, v in headers.items()]
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
    mark = len(switch.received)
    out = raw_exchange(daemon.daemon.http_address, raw)
    head, _, payload = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), head
    doc = orjson.loads(payload)
    assert doc["status"] == "error" and doc["error"] == str(status) and "request_id" in doc
    assert "auth_token" not in doc
    # (an action's commands are sent, and replied to, before its answer is written)
    assert not [c for _, c in switch.received[mark:] if a in c]
