"""A plain request read straight from the connection's buffer, for the fast lane: a GET's
head, or a POST's head with its body.

A portal's poll is a small GET whose head arrives whole in one read; an action is a small
POST whose head and body arrive whole in one read. pywsgi reads a head line by line, parses
it into a message object, checks it, and builds a WSGI environ of some thirty entries, of
which the lanes (channelsd.fastlists, channelsd.fastactions) read a dozen; a body it reads
through an input object of its own. Here a request that is already buffered whole, and
plain in every respect, is read in one match into the entries the lanes read, with the
values pywsgi would give them: a single-channel GET then costs the daemon ~180 µs of CPU
instead of ~210 (BENCHMARKS.md, issue #16). Anything else is left to pywsgi, unread: a
request not yet whole, another method or version, a path with an escape or a query, a GET
with a body or its framing, a POST without a Content-Length of plain digits, chunked, a
connection header, a line that is not `Name: value` of printable ASCII, more fields than
http.client takes. tests/test_quickhead.py holds that for every request it takes, the
entries are pywsgi's own, and the body the bytes pywsgi's input would give.
"""

from __future__ import annotations

import re
from typing import Any

from channelsd.httpheaders import MAX_HEADERS

# The request line: GET or POST, an origin-form path of printable ASCII without `%` (pywsgi
# unquotes those), `?` (a query) or `#`, and HTTP/1.1; then the fields, each a name of
# printable ASCII without the colon and a value of printable ASCII and tabs; then the
# blank line. The same bytes httpheaders._PLAIN takes, with CRLF endings only.
_HEAD = re.compile(
    rb"(GET|POST) (/[\x21\x24\x26-\x3e\x40-\x7e]*) HTTP/1\.1\r\n"
    rb"((?:[\x21-\x39\x3b-\x7e]+:[\t\x20-\x7e]*\r\n)*)\r\n"
)
# Fields that end or upgrade the connection, or ask for a 100: pywsgi's; and those that
# frame a body, but for a POST's Content-Length and Content-Type (read below).
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
# Of those, the ones a POST may have.
_BODY_FIELDS = frozenset(("HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"))
# The POST body's bytes, in the lane's environ (pywsgi's would be in its wsgi.input).
BODY = "channelsd.body"
# A Content-Length longer than this is not a body that arrives in one read.
_LENGTH_DIGITS = 9


def parse(buffered: bytes) -> tuple[int, str, dict[str, Any]] | None:
    """(the request's length, its path, the lane's environ) when `buffered` starts with a
    whole plain GET head, or a whole plain POST head and all of its body (in the environ as
    BODY); None when pywsgi should read it."""
    m = _HEAD.match(buffered)
    if m is None:
        return None
    post = m.group(1) == b"POST"
    fields = m.group(3)
    env: dict[str, Any] = {}
    length = None
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
                if not post or key not in _BODY_FIELDS:
                    return None
                if key == "HTTP_CONTENT_LENGTH":
                    # pywsgi keeps the value as the line gives it after the blanks that
                    # follow the colon: one length, of digits only, or its framing check
                    # refuses it (httpserver._check_framing)
                    digits = value.lstrip(b" \t")
                    if length is not None or not digits.isdigit() or len(digits) > _LENGTH_DIGITS:
                        return None
                    length = digits.decode("ascii")
                continue  # Content-Type: pywsgi's CONTENT_TYPE, which no lane reads
            text = value.strip(b" \t").decode("ascii")  # (the only blanks a value may hold)
            if key in env:  # a repeated field, joined as pywsgi's get_environ joins it
                text = env[key] + ("; " if "COOKIE" in key else ",") + text
            env[key] = text
    end = m.end()
    if post:
        if length is None:
            return None
        size = int(length)
        if len(buffered) < end + size:
            return None  # the body is not all here yet
        env["CONTENT_LENGTH"] = length
        env[BODY] = buffered[end : end + size]
        end += size
    path = m.group(2).decode("ascii")
    env["REQUEST_METHOD"] = "POST" if post else "GET"
    env["PATH_INFO"] = path
    env["QUERY_STRING"] = ""
    env["SERVER_PROTOCOL"] = "HTTP/1.1"
    return end, path, env
