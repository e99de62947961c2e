"""A plain GET's head read by channelsd.quickhead gives the lane what pywsgi's reading gives
it, and the client the same answer, byte for byte but the Date.

One daemon; each generated head goes over a raw socket twice: with the quick reading, and
with it off (every head then read by pywsgi). The lane is wrapped to keep the environ it was
asked with, and `parse` to see which heads it took: a generator that never produced a head
it takes would test nothing, so the test also counts those."""

from __future__ import annotations

import io
import re
import socket
import time
from typing import Any

import pytest
import test_fastlane
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_api import World
from test_fastlane import _DATE, read_sized

from channelsd import fastactions, httpserver, quickhead

from conftest import token, wait_until

world = test_fastlane.world  # the fixture: test_fastlane's daemon, its clock held

# A request id the server made (a random one per answer) in the head and in the body.
_MADE_ID = re.compile(rb"(X-Request-ID: |\"request_id\": ?\")[0-9a-f]{32}")


# Each property test: a fixed draw, so that how many requests reach the quick reading (asserted
# after it) does not depend on the run (a random one took 31 heads of 250 once).
_PROPERTY = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _masked(answers: bytes) -> bytes:
    """Answers less their Date and any request id the server made (a random one each)."""
    return _MADE_ID.sub(rb"\1<made>", _DATE.sub(b"", answers))


def same_entries(mine: dict[str, Any], pywsgis: dict[str, Any], wire: bytes) -> None:
    """What the quick reading gave a lane, pywsgi gave too, value for value; and every header
    pywsgi gave is among them."""
    for key, value in mine.items():
        if key != httpserver.DECLINED:
            assert pywsgis.get(key) == value, (key, wire)
    for key in pywsgis:
        if key.startswith("HTTP_"):
            assert key in mine, (key, wire)


def ask(port: int, wire: bytes) -> bytes:
    """One answer to `wire`, its Date and any request id the server made taken out (or what
    came before the connection closed, for a request that gets none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wire)
        try:
            head, body, _ = read_sized(sock, b"", wire.startswith(b"HEAD "))
        except AssertionError as closed:  # closed without a whole answer: say what came
            return f"closed: {closed}".encode()
    return _masked(head + b"\r\n\r\n" + body)


PATHS = [
    "/v2/channels",
    "/v2/channels/",
    "/v2/accounts/acc1/channels",
    "/v2/accounts/acc2/channels",
    "/v2/accounts/acc1/users/user1/channels",
    "/v2/accounts/acc1/devices/dev9/channels",
    "/v2/accounts/acc1/channels/{alice}",
    "/v2/accounts/acc2/channels/{alice}",
    "/v2/accounts/acc1/channels/no-such",
    "/v2/accounts/acc1/channels?filter_answered=true",
    "/v2/accounts/acc1/channels/%7Balice%7D",
    "/v2/accounts/acc1/chan%6eels",
    "/v2/accounts/acc1/channels#top",
    "/v2/nothing",
    "*",
]
NAMES = [
    "Host",
    "X-Auth-Token",
    "x-auth-token",
    "Authorization",
    "X-Request-ID",
    "Accept",
    "Accept-Encoding",
    "X-Pretty-Print",
    "Content-Length",
    "Connection",
    "Cookie",
    "Expect",
    "Upgrade",
    "X_Auth_Token",
    "X-Other",
    "Content-Type",
]
_VALUE_CHARS = st.sampled_from(list(' \t!#%,.-/:;=_abcXYZ019"*') + ["\x00", "\x7f", "é"])


@st.composite
def values(draw: st.DrawFn, name: str, tokens: dict[str, str]) -> str:
    low = name.lower()
    if low in ("x-auth-token", "x_auth_token"):
        return draw(st.sampled_from([tokens["super"], tokens["admin1"], tokens["user1"], "bad"]))
    if low == "authorization":
        return "Bearer " + draw(st.sampled_from([tokens["super"], "bad"]))
    if low == "content-length":
        return draw(st.sampled_from(["0", " 0 ", ""]))
    if low == "connection":
        return draw(st.sampled_from(["close", "keep-alive", "Keep-Alive"]))
    if low == "accept":
        return draw(st.sampled_from(["*/*", "text/csv", "application/json, text/csv;q=0.5"]))
    if low == "accept-encoding":
        return draw(st.sampled_from(["gzip", "identity", "gzip, br"]))
    if low == "x-pretty-print":
        return draw(st.sampled_from(["true", "false", "1"]))
    if low == "x-request-id":
        return draw(st.sampled_from(["r1", "a" * 40, "bad id", "r\t2"]))
    return draw(st.text(_VALUE_CHARS, max_size=12))


@st.composite
def heads(draw: st.DrawFn, alice: str, tokens: dict[str, str]) -> bytes:
    # Half of them plain in form (GET, HTTP/1.1, CRLF, printable `Name: value` lines: the
    # quick reading's, unless a path or a field is one it leaves), half anything.
    plain = draw(st.booleans())
    method = "GET" if plain else draw(st.sampled_from(["GET", "HEAD", "DELETE", "get"]))
    # (plain: the lane's own paths and fields thrice as likely as the rest)
    path = draw(st.sampled_from(PATHS + PATHS[:9] * 2 * plain)).format(alice=alice)
    version = "HTTP/1.1" if plain else draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/1.2"]))
    names = draw(st.lists(st.sampled_from(NAMES + NAMES[:8] * 2 * plain), max_size=4))
    if draw(st.integers(0, 9)):  # mostly a token: the lane answers those
        names.insert(draw(st.integers(0, len(names))), "X-Auth-Token")
    lines = [f"{method} {path} {version}"]
    for name in names:
        value = draw(values(name, tokens))
        if plain:
            value = value.replace("\x00", "").replace("\x7f", "").replace("é", "")
        gap = draw(st.sampled_from([": ", ":", ":  ", ": \t"] + ([] if plain else [" : "])))
        trail = draw(st.sampled_from(["", " ", "\t"]))
        lines.append(f"{name}{gap}{value}{trail}")
    ending = "\r\n" if plain else draw(st.sampled_from(["\r\n", "\n"]))
    return (ending.join(lines) + ending + ending).encode("utf-8")


def test_the_quick_reading_gives_the_lane_and_the_client_what_pywsgi_gives(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = world.h.daemon.http
    port = server.server_port
    lane, parse = server.lane, quickhead.parse
    asked: list[dict[str, Any]] = []
    taken: list[bytes] = []
    counts = {"taken": 0}

    def kept(environ: dict[str, Any]) -> Any:
        asked.append(dict(environ))
        return lane(environ)

    def seen(buffered: bytes) -> Any:
        got = parse(buffered)
        if got is not None:
            taken.append(buffered[: got[0]])
        return got

    server.lane = kept
    tokens = {name: token(name) for name in ("super", "admin1", "user1")}

    tok = tokens["super"]
    examples = [
        f"GET /v2/channels HTTP/1.1\r\nConnection: close\r\nX-Auth-Token: {tok}\r\n\r\n",
        f"GET /v2/channels HTTP/1.1\r\nExpect: 100-continue\r\nX-Auth-Token: {tok}\r\n\r\n",
        f"GET /v2/channels HTTP/1.1\r\nCookie: a=1\r\nCookie: b\r\nX-Auth-Token: {tok}\r\n\r\n",
        f"GET /v2/chan%6eels HTTP/1.1\r\nX-Auth-Token: {tok}\r\n\r\n",
        f"GET /v2/channels?x=1 HTTP/1.1\r\nX-Auth-Token: {tok}\r\n\r\n",
        f"GET /v2/channels HTTP/1.1\r\nX-Auth-Token: \t{tok} \r\nX-Pretty-Print:1\r\n\r\n",
    ]

    @_PROPERTY
    @given(st.sampled_from(examples).map(str.encode) | heads(world.alice_a, tokens))
    def check(wire: bytes) -> None:
        asked.clear()
        monkeypatch.setattr(quickhead, "parse", seen)
        before = len(taken)
        quick = ask(port, wire)
        quick_asked = list(asked)
        monkeypatch.setattr(quickhead, "parse", lambda buffered: None)
        asked.clear()
        slow = ask(port, wire)
        assert quick == slow, wire
        if len(taken) == before:
            return
        assert taken[-1] == wire  # the whole head, nothing after it
        counts["taken"] += 1
        assert len(quick_asked) == 1 and len(asked) == 1, wire
        same_entries(quick_asked[0], asked[0], wire)

    try:
        check()
    finally:
        server.lane = lane
    # The generator reached the quick reading often (about half its heads are plain).
    assert counts["taken"] >= 50, counts


def test_a_head_cut_in_two_is_read_by_pywsgi_and_answered(world: World) -> None:
    """A head that has not arrived whole is not the quick reading's: pywsgi waits for the
    rest, and the lane still answers it."""
    port = world.h.daemon.http.server_port
    wire = (
        f"GET /v2/accounts/acc1/channels/{world.alice_a} HTTP/1.1\r\n"
        f"X-Auth-Token: {token('super')}\r\nX-Request-ID: cut\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wire[:30])
        time.sleep(0.2)  # (not a timing assertion: the head is read in two, however long)
        sock.sendall(wire[30:])
        head, body, _ = read_sized(sock, b"")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"X-Request-ID: cut" in head
    assert world.alice_a.encode() in body


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v2/channels HTTP/1.1\r\nX-A: 1\r\n",  # no blank line yet
        b"GET /v2/channels?x=1 HTTP/1.1\r\n\r\n",
        b"GET /v2/%63hannels HTTP/1.1\r\n\r\n",
        b"GET /v2/channels HTTP/1.0\r\n\r\n",
        b"HEAD /v2/channels HTTP/1.1\r\n\r\n",
        b"GET  /v2/channels HTTP/1.1\r\n\r\n",
        b"GET /v2/channels HTTP/1.1\n\n",
        b"GET /v2/channels HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"GET /v2/channels HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /v2/channels HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
        b"GET /v2/channels HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        b"GET /v2/channels HTTP/1.1\r\n folded\r\n\r\n",
        b"GET /v2/channels HTTP/1.1\r\nX-A : 1\r\n\r\n",
        b"GET /v2/channels HTTP/1.1\r\nX-A: \xe9\r\n\r\n",
        b"GET /v2/channels HTTP/1.1\r\nX-A: 1\r2\r\n\r\n",
        b"GET /v2/channels HTTP/1.1\r\n" + b"X-A: 1\r\n" * 100 + b"\r\n",  # http.client: 400
        b"POST /v2/x HTTP/1.1\r\n\r\n",  # no length
        b"POST /v2/x HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcd",  # the body not all here
        b"POST /v2/x HTTP/1.1\r\nContent-Length: 5 \r\n\r\nabcde",  # framing check: 400
        b"POST /v2/x HTTP/1.1\r\nContent-Length: +5\r\n\r\nabcde",
        b"POST /v2/x HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nabcde",
        b"POST /v2/x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST /v2/x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /v2/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n",
        b"POST /v2/x HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nabcde",
        b"POST /v2/x HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde",
        b"POST /v2/x HTTP/1.1\r\nContent-Length: 1234567890\r\n\r\nabcde",
        b"POST /v2/x HTTP/1.0\r\nContent-Length: 5\r\n\r\nabcde",
        b"PUT /v2/x HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde",
    ],
)
def test_what_the_quick_reading_leaves_to_pywsgi(head: bytes) -> None:
    assert quickhead.parse(head) is None


def test_what_the_quick_reading_takes_of_a_post() -> None:
    wire = (
        b"POST /v2/accounts/a/channels/u HTTP/1.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 007\r\nX-Auth-Token: t\r\n\r\n{"a":1}GET /next'
    )
    length, path, env = quickhead.parse(wire)
    assert wire[length:] == b"GET /next" and path == "/v2/accounts/a/channels/u"
    assert env[quickhead.BODY] == b'{"a":1}' and env["CONTENT_LENGTH"] == "007"
    assert env["REQUEST_METHOD"] == "POST" and env["HTTP_X_AUTH_TOKEN"] == "t"
    assert "CONTENT_TYPE" not in env and "HTTP_CONTENT_TYPE" not in env  # (no lane reads it)


def test_what_the_quick_reading_takes() -> None:
    head = (
        b"GET /v2/accounts/a/channels HTTP/1.1\r\nX-Auth-Token:  t \r\nx-auth-token: u\r\n"
        b"X_Drop: 1\r\nCookie: a=1\r\nCookie: b=2\r\n" + b"X-B: 1\r\n" * 94 + b"\r\nGET /next"
    )
    length, path, env = quickhead.parse(head)
    assert head[length:] == b"GET /next" and path == "/v2/accounts/a/channels"
    assert env["HTTP_X_AUTH_TOKEN"] == "t,u" and env["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_X_DROP" not in env and env["HTTP_X_B"] == ",".join(["1"] * 94)
    assert env["PATH_INFO"] == path and env["QUERY_STRING"] == ""


@pytest.mark.parametrize("fields", [99, 100])
def test_the_field_limit_is_pywsgis(
    world: World, monkeypatch: pytest.MonkeyPatch, fields: int
) -> None:
    """99 fields are read (the blank line makes http.client's 100 lines); 100 are refused, by
    pywsgi, whichever reading was on."""
    port = world.h.daemon.http.server_port
    wire = (
        f"GET /v2/accounts/acc1/channels HTTP/1.1\r\nX-Auth-Token: {token('super')}\r\n"
        + "X-A: 1\r\n" * (fields - 2)
        + "X-Request-ID: limit\r\n\r\n"
    ).encode()
    assert (quickhead.parse(wire) is not None) == (fields == 99)
    quick = ask(port, wire)
    monkeypatch.setattr(quickhead, "parse", lambda buffered: None)
    assert ask(port, wire) == quick
    assert quick.startswith(b"HTTP/1.1 200" if fields == 99 else b"HTTP/1.1 400")


# -- a POST read whole, for the actions' lane ---------------------------------------------------

# Bodies: a break (it leaves the call as it was, so each reading can send one to the same
# call: the lane answers it when it reads it whole), and bodies no action is planned for (an
# unknown action or field, a bad cause, not an object, not JSON: the Flask resource answers
# them, whichever reading took them).
_BODIES = [
    b'{"action":"break"}',
    b'{"action":"break"}',
    b'{"action":"nonsense"}',
    b'{"data":{"action":"hangup","nope":1}}',
    b'{"action":"hangup","cause":"NOT A CAUSE"}',
    b"{}",
    b"[1]",
    b"nope",
    b'{"action":"hangup"',
]


def _next_request(tok: str) -> bytes:
    """What follows the POST on the same connection: framed right, it is answered, then the
    connection ends; framed wrong, its bytes are read as (part of) the body or as a request."""
    return f"GET /v2/channels HTTP/1.1\r\nConnection: close\r\nX-Auth-Token: {tok}\r\n\r\n".encode()


@st.composite
def posts(draw: st.DrawFn, alice: str, tokens: dict[str, str]) -> bytes:
    # Half of them plain (POST, a call's path, a body framed by its length, one of the
    # tokens): mostly a break the lane answers; the rest anything.
    plain = draw(st.booleans())
    method = "POST" if plain else draw(st.sampled_from(["POST", "PUT", "post"]))
    paths = PATHS[6:7] * 6 * plain + PATHS
    path = draw(st.sampled_from(paths)).format(alice=alice)
    body = draw(st.sampled_from(_BODIES[:1] * 12 * plain + _BODIES))
    after = _next_request(tokens["super"])
    harmless = ["Host", "X-Request-ID", "Accept", "Accept-Encoding", "Content-Type", "X-Other"]
    names = draw(st.lists(st.sampled_from(harmless * plain + NAMES[:8]), max_size=3))
    lines = [f"{method} {path} HTTP/1.1"]
    for name in names:
        lines.append(f"{name}: {draw(values(name, tokens))}")
    if plain or draw(st.integers(0, 9)):
        chosen = draw(st.sampled_from(["super", "admin1"] * 2 * plain + [*tokens, "bad"]))
        field = f"X-Auth-Token: {tokens.get(chosen, chosen)}"
        lines.insert(draw(st.integers(1, len(lines))), field)
    # The framing: mostly the body's length; or too short (the rest is read as the next
    # request), too long (the next request is read into the body), with blanks, signs or
    # leading zeros, twice, beside chunked, or none at all.
    exact = plain and draw(st.integers(0, 3)) > 0
    length = len(body) + (0 if exact else draw(st.sampled_from([0, -1, 2, len(after) // 2])))
    forms = [
        f"Content-Length: {length}",
        f"Content-Length:{length}",
        f"Content-Length: \t{length}",
        f"Content-Length: {length} ",
        f"Content-Length: +{length}",
        f"Content-Length: 00{length}",
        f"content-length: {length}",
        f"Content-Length: {length}\r\nContent-Length: {length}",
        f"Content-Length: {length}\r\nTransfer-Encoding: chunked",
        f"Content_Length: {length}",
        "X-None: 1",
    ]
    framing = forms[0] if exact else draw(st.sampled_from(forms))
    lines.insert(draw(st.integers(1, len(lines))), framing)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body + after


def ask_all(port: int, wire: bytes) -> bytes:
    """Every byte answered to `wire` until the server ends the connection, Dates and made
    request ids taken out."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wire)
        while data := sock.recv(65536):
            out += data
    return _masked(out)


def test_a_post_read_whole_gives_the_actions_lane_and_the_client_what_pywsgi_gives(
    world: World, switch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quick reading of a POST frames its body where pywsgi does (a request behind it is
    answered alike, or read alike as part of it), and gives the actions' lane the entries and
    the body pywsgi gives the application."""
    server = world.h.daemon.http
    port = server.server_port
    lane, app, parse = server.action_lane, server.application, quickhead.parse
    laned: list[dict[str, Any]] = []
    applied: list[dict[str, Any]] = []
    counts = {"taken": 0, "answered": 0}
    mark = len(switch.received)

    def kept(environ: dict[str, Any]) -> Any:
        laned.append(dict(environ))
        return lane(environ)

    def seen(environ: dict[str, Any], start_response: Any) -> Any:
        entry = dict(environ)
        if environ.get("REQUEST_METHOD") == "POST" and environ.get("CONTENT_LENGTH"):
            try:
                raw = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
            except Exception as exc:  # a body cut short: its error, for the app, as it came
                entry[quickhead.BODY] = None
                environ["wsgi.input"] = fastactions._Unreadable(exc)
            else:
                entry[quickhead.BODY] = raw
                environ["wsgi.input"] = io.BytesIO(raw)
        applied.append(entry)
        return app(environ, start_response)

    monkeypatch.setattr(server, "action_lane", kept)
    monkeypatch.setattr(server, "application", seen)
    tokens = {name: token(name) for name in ("super", "admin1", "user1")}

    # A parked call of acc1's (not playing: a break leaves it as it was).
    parked, _ = switch.originate(dest="9003", variables={"account_id": "acc1"})
    wait_until(lambda: world.h.table.get(parked) is not None, what="the parked call")

    @_PROPERTY
    @given(posts(parked, tokens))
    def check(wire: bytes) -> None:
        laned.clear()
        monkeypatch.setattr(quickhead, "parse", parse)
        quick = ask_all(port, wire)
        quick_laned = list(laned)
        monkeypatch.setattr(quickhead, "parse", lambda buffered: None)
        applied.clear()
        slow = ask_all(port, wire)
        assert quick == slow, wire
        if not quick_laned:
            return
        counts["answered"] += b"HTTP/1.1 200 OK" in quick and b"initiated" in quick
        counts["taken"] += 1
        # pywsgi gave the application what the quick reading gave the lane (the body as its
        # input gives it)
        assert applied, ("the quick reading took a POST pywsgi refuses", wire)
        same_entries(quick_laned[0], applied[0], wire)

    check()
    assert counts["taken"] >= 50 and counts["answered"] >= 20, counts
    # The breaks, and nothing else, reached the switch; the call is still up.
    sent = {c.split(" ", 2)[1] for _, c in switch.received[mark:] if c.startswith("api ")}
    assert sent == {"uuid_break"} and world.h.table.get(parked) is not None, sent
