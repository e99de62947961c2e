"""Attacks on the issue #16 changes (fast header parser, fast actions, gzip lists, ended
records, ESL writes), each over real sockets where the real thing is a socket."""

import contextlib
import io
import socket

import pytest

from channelsd.httpheaders import read_headers

from conftest import Harness

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
