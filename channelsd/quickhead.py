"""A plain GET's head read straight from the connection's buffer, for the fast lane.

A portal's poll is a small GET whose head arrives whole in one read. pywsgi reads it line by
line, parses it into a message object, checks it, and builds a WSGI environ of some thirty
entries, of which the lane (channelsd.fastlists) reads eleven. Here a head that is already
buffered whole, and plain in every respect, is read in one match into the entries the lane
reads, with the values pywsgi would give them: a single-channel GET then costs the daemon
~180 µs of CPU instead of ~210 (BENCHMARKS.md, issue #16). Anything else is left to pywsgi,
unread: a head not yet whole, another method or version, a path with an escape or a
query, a body or its framing, a connection header, a line that is not `Name: value` of
printable ASCII, more fields than http.client takes. tests/test_quickhead.py holds that
for every head it takes, the entries are pywsgi's own.
"""

from __future__ import annotations

import re
from typing import Any

from channelsd.httpheaders import MAX_HEADERS

# The request line: GET, an origin-form path of printable ASCII without `%` (pywsgi
# unquotes those), `?` (a query) or `#`, and HTTP/1.1; then the fields, each a name of
# printable ASCII without the colon and a value of printable ASCII and tabs; then the
# blank line. The same bytes httpheaders._PLAIN takes, with CRLF endings only.
_HEAD = re.compile(
    rb"GET (/[\x21\x24\x26-\x3e\x40-\x7e]*) HTTP/1\.1\r\n"
    rb"((?:[\x21-\x39\x3b-\x7e]+:[\t\x20-\x7e]*\r\n)*)\r\n"
)
# Fields that frame a body, end or upgrade the connection, or ask for a 100: pywsgi's.
_LEFT = frozenset(
    (
        "HTTP_CONTENT_LENGTH",
        "HTTP_CONTENT_TYPE",
        "HTTP_TRANSFER_ENCODING",
        "HTTP_CONNECTION",
        "HTTP_UPGRADE",
        "HTTP_EXPECT",
    )
)


def parse(buffered: bytes) -> tuple[int, str, dict[str, Any]] | None:
    """(the head's length, its path, the lane's environ) when `buffered` starts with a
    whole plain GET head; None when pywsgi should read it."""
    m = _HEAD.match(buffered)
    if m is None:
        return None
    fields = m.group(2)
    env: dict[str, Any] = {}
    if fields:
        lines = fields[:-2].split(b"\r\n")
        if len(lines) >= MAX_HEADERS:  # with the blank line, more than http.client takes
            return None
        for line in lines:
            name, _, value = line.partition(b":")
            if b"_" in name:
                continue  # pywsgi drops them: HTTP_X_A would be X-A's or X_A's
            key = "HTTP_" + name.decode("ascii").replace("-", "_").upper()
            if key in _LEFT:
                return None
            text = value.strip(b" \t").decode("ascii")  # (the only blanks a value may hold)
            if key in env:  # a repeated field, joined as pywsgi's get_environ joins it
                text = env[key] + ("; " if "COOKIE" in key else ",") + text
            env[key] = text
    path = m.group(1).decode("ascii")
    env["REQUEST_METHOD"] = "GET"
    env["PATH_INFO"] = path
    env["QUERY_STRING"] = ""
    env["SERVER_PROTOCOL"] = "HTTP/1.1"
    return m.end(), path, env
