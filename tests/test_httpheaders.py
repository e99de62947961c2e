"""channelsd.httpheaders reads every header block as pywsgi's own parser (the email
package's) does: the same names and values in the same order, the same status, the same
bytes consumed; only faster for plain blocks."""

import contextlib
import copy
import io
import json
import pickle
import socket
from typing import Any

import pytest
from gevent.pywsgi import WSGIHandler, WSGIServer, headers_factory
from hypothesis import given, settings
from hypothesis import strategies as st

from channelsd import httpheaders
from channelsd.config import HttpLimits
from channelsd.httpheaders import MAX_HEADERS, MAX_LINE, IndexedMessage, read_headers
from channelsd.httpserver import Handler, HttpServer
from channelsd.metrics import Metrics

_NAMES = st.sampled_from(
    [b"Host", b"Content-Length", b"X-Auth-Token", b"content-type", b"X_Under", b"From", b"A"]
)
_VALUES = st.sampled_from(
    [b"", b"x", b" spaced ", b"\tTab", b"a:b", b"caf\xc3\xa9", b"\x85", b"\x0b", b"x\ry", b"  "]
)
_PLAIN_VALUES = st.sampled_from([b"", b"x", b" spaced ", b"\tTab", b"a:b", b"  ", b"tok-1.2_3"])
_ENDINGS = st.sampled_from([b"\r\n", b"\n"])


# Values and lines a proxy in front may read otherwise than the email parser: refused.
_TWO_WAYS = (b"\x0b", b"x\ry")


@st.composite
def blocks(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A block, and whether it holds a line that can be read two ways (httpheaders' doc)."""
    lines = []
    refused = False
    plain = draw(st.booleans())  # half the blocks only plain fields: the quick reading's
    for _ in range(draw(st.integers(0, 6))):
        kinds = ["field"] if plain else ["field", "field", "fold", "no colon", "odd"]
        kind = draw(st.sampled_from(kinds))
        end = draw(_ENDINGS)
        if kind == "field":
            sep = draw(st.sampled_from([b": ", b":", b":  ", b":\t"] + ([] if plain else [b" : "])))
            value = draw(_PLAIN_VALUES if plain else _VALUES)
            refused |= sep == b" : " or value in _TWO_WAYS
            lines.append(draw(_NAMES) + sep + value + end)
        elif kind == "fold":
            value = draw(_VALUES)
            refused |= not lines or value in _TWO_WAYS
            lines.append(draw(st.sampled_from([b" ", b"\t"])) + value + end)
        elif kind == "no colon":
            refused = True
            lines.append(b"garbage" + end)
        else:
            refused = True
            lines.append(draw(st.sampled_from([b":novalue", b"From someone", b"N\x00: v"])) + end)
    ends = [b"\r\n", b"\n"] if plain else [b"\r\n", b"\n", b"", b"Cut: short"]
    tail = draw(st.sampled_from(ends))
    refused |= tail == b""  # the body's first bytes read as a line without a colon
    return b"".join(lines) + tail + b"BODY", refused


def both(block: bytes) -> tuple[object, object]:
    ours_fp, theirs_fp = io.BytesIO(block), io.BytesIO(block)
    ours, theirs = read_headers(ours_fp), headers_factory(theirs_fp)
    return (
        (ours.status, list(ours.items()), list(ours.headers), ours_fp.read()),
        (theirs.status, list(theirs.items()), list(theirs.headers), theirs_fp.read()),
    )


@given(blocks())
@settings(max_examples=800, derandomize=True, deadline=None)
def test_every_block_reads_as_the_email_parser_reads_it(drawn: tuple[bytes, bool]) -> None:
    block, refused = drawn
    if refused:
        with pytest.raises(ValueError):
            read_headers(io.BytesIO(block))
        return
    ours, theirs = both(block)
    assert ours == theirs, block


def test_a_plain_request_block(monkeypatch: pytest.MonkeyPatch) -> None:
    block = b"Host: h\r\nContent-Length: 19\r\nX-Auth-Token:  tok \r\n\r\n{}"
    ours, theirs = both(block)
    assert ours == theirs
    # ... and read without the email parser
    monkeypatch.setattr(httpheaders.email.parser, "Parser", None)
    assert list(read_headers(io.BytesIO(block)).items()) == ours[1]
    assert ours[1] == [("Host", "h"), ("Content-Length", "19"), ("X-Auth-Token", "tok ")]


def test_the_limits_are_http_clients() -> None:
    ours, theirs = both(b"X-Long: " + b"a" * MAX_LINE + b"\r\n\r\n")
    assert ours == theirs and ours[0] == "Line too long"
    many = b"".join(b"H%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n"
    with pytest.raises(Exception) as mine:
        read_headers(io.BytesIO(many))
    with pytest.raises(Exception) as pywsgis:
        headers_factory(io.BytesIO(many))
    assert type(mine.value) is type(pywsgis.value) and str(mine.value) == str(pywsgis.value)


# Every spelling a lookup may use, and names no block holds.
_ASKED = [
    spelled
    for name in (
        "Host",
        "Content-Length",
        "X-Auth-Token",
        "content-type",
        "X_Under",
        "From",
        "A",
        "X-New",
    )
    for spelled in (name, name.lower(), name.upper())
] + ["Missing", "connection", "transfer-encoding"]

_CHANGES = st.lists(
    st.tuples(
        st.sampled_from(["set", "del", "replace", "raw", "add", "assign", "pop", "sort"]),
        st.sampled_from(_ASKED),
        _PLAIN_VALUES.map(lambda v: v.decode("latin-1")),
    ),
    max_size=5,
)


def _change(msg: object, op: str, name: str, value: str) -> object:
    """One change by a method of the email package (or of its field list); what it raised."""
    try:
        if op == "set":
            msg[name] = value
        elif op == "del":
            del msg[name]
        elif op == "replace":
            msg.replace_header(name, value)
        elif op == "raw":
            msg.set_raw(name, value)
        elif op == "add":
            msg.add_header(name, value, charset="x")
        elif op == "assign":
            msg._headers = [(name, value), *msg._headers]
        elif op == "pop":
            msg._headers.pop()
        else:
            msg._headers.sort()
    except (KeyError, IndexError) as exc:
        return type(exc)
    return None


def _lookups(msg: object) -> list[object]:
    return [
        (msg.get(n), msg.get(n, "-"), msg.get_all(n), msg.get_all(n, "-"), n in msg, msg[n])
        for n in _ASKED
    ] + [msg.typeheader, msg.getheader("content-length"), list(msg.items())]


@given(blocks(), _CHANGES)
@settings(max_examples=400, derandomize=True, deadline=None)
def test_lookups_by_name_answer_as_the_email_package_does(
    drawn: tuple[bytes, bool], changes: list[tuple[str, str, str]]
) -> None:
    """The index a plain block is read into answers every lookup as the email package's scan
    does, before and after each change any of its methods can make."""
    block, refused = drawn
    if refused:
        return
    ours, theirs = read_headers(io.BytesIO(block)), headers_factory(io.BytesIO(block))
    assert _lookups(ours) == _lookups(theirs), block
    for op, name, value in changes:
        assert _change(ours, op, name, value) == _change(theirs, op, name, value)
        assert _lookups(ours) == _lookups(theirs), (block, op, name, value)


@given(blocks())
@settings(max_examples=400, derandomize=True, deadline=None)
def test_the_environs_header_entries_are_pywsgis(drawn: tuple[bytes, bool]) -> None:
    """channelsd's handler turns a block into the environ's HTTP_* entries as pywsgi does,
    whichever way the block was read."""
    block, refused = drawn
    if refused:
        return

    ours, theirs = Handler.__new__(Handler), WSGIHandler.__new__(WSGIHandler)
    ours.headers = read_headers(io.BytesIO(block))
    theirs.headers = headers_factory(io.BytesIO(block))
    assert list(ours._headers()) == list(theirs._headers()), block


def test_a_plain_block_is_looked_up_without_a_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plain reading is the indexed one: its lookups never lower-case the names of
    the fields one by one as the email package's do."""
    msg = read_headers(io.BytesIO(b"Host: h\r\nContent-Length: 2\r\nX-A: 1\r\n\r\n"))
    assert isinstance(msg, httpheaders.IndexedMessage)
    msg.get("host")  # the index is built once
    monkeypatch.setattr(httpheaders.OldMessage, "get", None)
    monkeypatch.setattr(httpheaders.OldMessage, "get_all", None)
    assert (msg.get("CONTENT-LENGTH"), msg.get_all("x-a"), "HOST" in msg) == ("2", ["1"], True)


# -- outside attack: the email package's other ways of changing a message -------------------

BLOCK = (
    b"Host: h\r\nContent-Length: 2\r\nX-Auth-Token: t1\r\nx-auth-token: t2\r\n"
    b"Content-Type: a/b\r\n\r\n"
)


def _read_both() -> tuple[Any, Any]:
    ours, theirs = read_headers(io.BytesIO(BLOCK)), headers_factory(io.BytesIO(BLOCK))
    assert isinstance(ours, IndexedMessage)
    return ours, theirs


@pytest.mark.parametrize("looked_up_first", [True, False])
def test_a_shallow_copy_is_looked_up_as_the_email_package_does(looked_up_first: bool) -> None:
    """copy.copy(message), then the email package's own __setitem__ and replace_header on the
    copy: both copies answer with the new values (an outside attack found the first
    IndexedMessage's copy answering from an index nothing dropped)."""
    copies = []
    for msg in _read_both():
        if looked_up_first:
            msg.get("host")  # (pywsgi and _check_framing look up before anything else)
        dup = copy.copy(msg)
        dup.get("host")
        dup["X-New"] = "n"
        dup.replace_header("Host", "evil")
        copies.append(dup)
    ours, theirs = copies
    assert (theirs.get("Host"), theirs.get("X-New"), "X-New" in theirs) == ("evil", "n", True)
    assert (ours.get("Host"), ours.get("X-New"), "X-New" in ours) == ("evil", "n", True)
    assert _lookups(ours) == _lookups(theirs)


def test_a_pickled_message_loads_as_the_email_packages_does() -> None:
    """Both survive pickle (the first IndexedMessage did not load)."""
    ours, theirs = _read_both()
    assert _lookups(pickle.loads(pickle.dumps(theirs))) == _lookups(theirs)
    try:
        loaded = pickle.loads(pickle.dumps(ours))
    except AttributeError as exc:
        pytest.fail(f"an IndexedMessage does not unpickle: {exc}")
    assert _lookups(loaded) == _lookups(theirs)


@pytest.mark.parametrize(
    "how", [{"key": lambda kv: kv[0].lower()}, {"reverse": True}], ids=["key", "reverse"]
)
def test_the_field_list_sorts_as_a_list_does(how: dict[str, Any]) -> None:
    """The fields are a plain list: sort(key=...) and sort(reverse=True) work on it, and
    the lookups follow."""
    ours, theirs = _read_both()
    theirs._headers.sort(**how)
    ours._headers.sort(**how)
    assert _lookups(ours) == _lookups(theirs)


def test_a_new_policy_fetches_as_the_email_package_does() -> None:
    """Each value as the message's policy fetches it, also after the policy changed (an
    index built under the old one answered its strings)."""
    import email.policy

    block = b"Host: h\r\nFrom: a@b,   c@d\r\n\r\n"
    answers = []
    for msg in (read_headers(io.BytesIO(block)), headers_factory(io.BytesIO(block))):
        msg.get("from")
        msg.policy = email.policy.HTTP
        value = msg.get("from")
        answers.append((str(value), type(value).__name__))
    ours, theirs = answers
    assert theirs == ("a@b, c@d", "_UniqueAddressHeader")
    assert ours == theirs


# -- outside attack: channelsd's server against pywsgi's, over real sockets ------------------


def _echo(env: dict[str, Any], start: Any) -> list[bytes]:
    body = env["wsgi.input"].read()
    out = {k: v for k, v in env.items() if k.startswith(("HTTP_", "CONTENT_"))}
    out["body"] = body.decode("latin-1")
    data = json.dumps(out, sort_keys=True).encode()
    start("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


@pytest.fixture(scope="module")
def servers() -> Any:
    ours = HttpServer(("127.0.0.1", 0), _echo, HttpLimits(), Metrics())
    theirs = WSGIServer(("127.0.0.1", 0), _echo, log=None, error_log=None)
    ours.start()
    theirs.start()
    yield ours, theirs
    ours.stop(timeout=1)
    theirs.stop(timeout=1)


def _exchange(server: Any, raw: bytes) -> tuple[bytes, bytes]:
    s = socket.create_connection((server.server_host, server.server_port), timeout=5)
    try:
        s.sendall(raw)
        out = b""
        with contextlib.suppress(OSError):
            while data := s.recv(65536):
                out += data
    finally:
        s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


def _request(fields: list[bytes], body: bytes = b"ok") -> bytes:
    return (
        b"POST /x HTTP/1.1\r\n"
        + b"".join(f + b"\r\n" for f in fields)
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )


_ENVIRON_CASES = {
    "cookies": [b"Host: a", b"Cookie: a=1", b"cookie: b=2", b"COOKIE: c=3"],
    "token_twice": [b"Host: a", b"X-Auth-Token: t1", b"x-auth-token: t2"],
    "underscore_token": [b"Host: a", b"X_Auth_Token: t1", b"X-Auth-Token: t2"],
    "underscore_length": [b"Host: a", b"Content_Length: 5"],
    "type_twice": [b"Host: a", b"content-type: a/b", b"Content-Type: c/d"],
    "type_upper": [b"Host: a", b"CONTENT-TYPE: a/b"],
    "white_space": [b"Host: a", b"X-A:  v  \t", b"X-A:\tw", b"X-B:", b"X-C: "],
    "odd_names": [b"Host: a", b"X.Y: 1", b"X~Y: 2", b"X!#$%&'*+^`|: 3"],
    "accept_thrice": [b"Host: a", b"Accept: a", b"accept: b", b"ACCEPT: c"],
    "non_ascii_value": [b"Host: a", b"X-A: v\xe9"],
    "folded": [b"Host: a", b"X-A: v", b" folded"],
    "at_the_field_limit": [b"Host: a"] + [b"X-H%d: %d" % (i, i) for i in range(96)],
    "at_the_line_limit": [b"Host: a", b"X-Long: " + b"v" * (65536 - len(b"X-Long: \r\n"))],
}


@pytest.mark.parametrize("name", list(_ENVIRON_CASES))
def test_the_environ_over_a_socket_is_pywsgis(servers: Any, name: str) -> None:
    ours, theirs = servers
    raw = _request(_ENVIRON_CASES[name])
    mine, pywsgis = _exchange(ours, raw), _exchange(theirs, raw)
    assert mine[0] == b"HTTP/1.1 200 OK"
    assert json.loads(mine[1]) == json.loads(pywsgis[1])


@pytest.mark.parametrize(
    "fields",
    [
        [b"Content-Length: 2", b"content-length: 2"],
        [b"Content-Length: 2", b"Content-Length: 3"],
        [b"Content-Length: 2", b"Transfer-Encoding: chunked"],
        [b"transfer-encoding: chunked", b"CONTENT-LENGTH: 2"],
        [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
        [b"Transfer-Encoding: identity"],
        [b"Content-Length: +2"],
        [b"Content-Length: 2 "],
        [b"Content-Length : 2"],
    ],
)
def test_framing_a_proxy_could_read_otherwise_is_refused(servers: Any, fields: list[bytes]) -> None:
    ours, _ = servers
    body = b"2\r\nok\r\n0\r\n\r\n" if any(b"chunked" in f.lower() for f in fields) else b"ok"
    raw = (
        b"POST /x HTTP/1.1\r\nHost: a\r\n"
        + b"".join(f + b"\r\n" for f in fields)
        + b"Connection: close\r\n\r\n"
        + body
    )
    status, _ = _exchange(ours, raw)
    assert status == b"HTTP/1.1 400 Bad Request"


def test_a_token_sent_twice_is_refused_by_the_daemon(switch: Any, make_daemon: Any) -> None:
    """End to end: X-Auth-Token twice (even the same valid token) is `tok,tok` in the environ,
    as pywsgi makes it: no token, a 401; once, a 200."""
    from conftest import token

    h = make_daemon([switch])
    tok = token("super").encode()
    once = _exchange(
        h.daemon.http,
        b"GET /v2/channels HTTP/1.1\r\nHost: a\r\nX-Auth-Token: %s\r\nConnection: close\r\n\r\n"
        % tok,
    )
    twice = _exchange(
        h.daemon.http,
        b"GET /v2/channels HTTP/1.1\r\nHost: a\r\nX-Auth-Token: %s\r\nx-auth-token: %s\r\n"
        b"Connection: close\r\n\r\n" % (tok, tok),
    )
    assert once[0].split(b" ")[1] == b"200", once
    assert twice[0].split(b" ")[1] == b"401", twice
