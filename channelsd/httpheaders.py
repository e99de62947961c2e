"""A request's header block, read as pywsgi reads it, parsed without the email package.

pywsgi reads the header lines with http.client's limits and hands them to the email
package's parser: its feed parser, policy objects and line cracking were the largest single
cost of a small request (a POST action's ~70 µs of ~350, issue #16). Nearly every request's
headers are plain `Name: value` lines of printable ASCII; those are split here, to the same
names and values that parser gives them (tests/test_httpheaders.py compares both on
generated blocks). Any other block — a folded line, a line without a colon, a control or
non-ASCII byte, a block cut short by the client — goes to the email parser as before, so
that every odd case is read exactly as it was.
"""

from __future__ import annotations

import email.parser
import http.client
import re
from typing import Any

from gevent.pywsgi import OldMessage

# http.client's bounds on a header block (its _MAXLINE and _MAXHEADERS).
MAX_LINE = getattr(http.client, "_MAXLINE", 65536)
MAX_HEADERS = getattr(http.client, "_MAXHEADERS", 100)
# A name of the characters the email parser takes in one (printable ASCII but the colon),
# a value of printable ASCII and tabs, one line ending.
_PLAIN = re.compile(rb"[\x21-\x39\x3b-\x7e]+:[\t\x20-\x7e]*\r?\n")
_ENDS = (b"\r\n", b"\n", b"")


def read_headers(fp: Any) -> Any:
    """pywsgi's headers_factory(fp): the header block as pywsgi's OldMessage, with
    status "Line too long" for a line over MAX_LINE; http.client.HTTPException beyond
    MAX_HEADERS lines."""
    lines = []
    while True:
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            msg = OldMessage()
            msg.status = "Line too long"
            return msg
        lines.append(line)
        if len(lines) > MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        if line in _ENDS:
            break
    fields = lines[:-1]
    if lines[-1] and all(_PLAIN.fullmatch(line) for line in fields):
        msg = OldMessage()
        for line in fields:
            name, _, value = line.partition(b":")
            # the email parser's (compat32) reading of a one-line field
            msg[name.decode("latin-1")] = value.lstrip(b" \t").rstrip(b"\r\n").decode("latin-1")
        return msg
    text = b"".join(lines).decode("iso-8859-1")
    return email.parser.Parser(_class=OldMessage).parsestr(text)
